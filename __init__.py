"""clipae: unsupervised temporal action localization with CLIP-AE.

Sub-packages, one job each:

- ``clipae.pipeline``   snippet grid, decoding, manifest, weights, the command-line entry points
- ``clipae.extractors`` one file per feature stream (``vggish``, ``i3d_rgb``, ``i3d_flow``, ``clip``)
- ``clipae.models``     the CLIP-AE model, the UGCT baseline and ``clipae-train``
- ``clipae.eval``       proposals, the official detection metrics, ``clipae-eval``

Extraction never imports ``clipae.models``; the models never decode video.
"""

__version__ = "0.1.0"
