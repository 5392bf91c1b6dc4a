"""clipae: unsupervised temporal action localization with CLIP-AE.

Sub-packages, one job each, bottom to top (a layer imports only those below it):

- ``clipae.core``       snippet grid, errors, registries, atomic files, weights, signals, torchrun ranks
- ``clipae.decoding``   frames, audio and snippet batches of one video
- ``clipae.extractors`` one file per feature stream (``vggish``, ``i3d_rgb``, ``i3d_flow``, ``clip``)
- ``clipae.pipeline``   the extraction runner: ``clipae-extract``, the manifest, torchrun sharding
- ``clipae.datasets``   ground-truth formats, public-feature import and comparison
- ``clipae.models``     the CLIP-AE model, the UGCT baseline and ``clipae-train``
- ``clipae.eval``       proposals, the official detection metrics, ``clipae-eval``, ``clipae-localize``
- ``clipae.bench``, ``clipae.cli``  benchmarks; the console scripts
- ``clipae.demo``       the embedded demo dataset and ``make demo``

Extraction never imports ``clipae.models``; the models never decode video.
"""

__version__ = "0.1.0"
