"""Extraction presets: the feature conventions of public feature sets, as one table of data.

``clipae-extract --preset NAME`` sets the defaults of the extraction options below; any option
given explicitly on the command line wins over the preset (argparse defaults, so nothing else
needs to know presets exist). ``--preset list`` prints the table with the source of every number.
Each manifest line records the preset and the options that overrode it.

A preset holds only what this code can reproduce: the snippet grid, the resize rule (short
side), the crops, the flow method and its 8-bit quantisation (flow bound 20 is fixed, see
:data:`clipae.extractors.flow.FLOW_BOUND`) and the streams. What the public sources leave open
is written in ``unknown``: the preset then keeps this code's default for it, and
``clipae-compare-features`` is the way to check how close the result is.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Source:
    """Where a number of a preset comes from."""

    fact: str
    url: str


@dataclass(frozen=True)
class Preset:
    """One convention. ``options`` maps ``clipae-extract`` option dests to their values."""

    name: str
    summary: str
    options: dict
    sources: tuple[Source, ...]
    unknown: tuple[str, ...] = field(default=())


_WTALC_SOURCES = (
    Source("16-frame non-overlapping chunks, one feature per chunk",
           "https://github.com/sujoyp/wtalc-pytorch/issues/5"),
    Source("all THUMOS'14 videos set to 25 fps before extraction (BaS-Net / UM / LACP author)",
           "https://github.com/Pilhyeon/Learning-Action-Completeness-from-Points/issues/7"),
    Source("two-stream I3D pre-trained on Kinetics-400",
           "https://github.com/Pilhyeon/Learning-Action-Completeness-from-Points/issues/7"),
    Source("resize rule of the Kinetics I3D release: smallest side 256 (bilinear), centre crop 224 at test; "
           "flow truncated to [-20, 20] and rescaled to [-1, 1]",
           "https://github.com/google-deepmind/kinetics-i3d/pull/5"),
    Source("BaS-Net publishes these THUMOS14 features with its code; later methods (e.g. C3BN) download them there",
           "https://github.com/Pilhyeon/BaSNet-pytorch"),
)

#: every preset by name; the values are ``clipae-extract`` option dests
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        "wtalc-thumos14",
        "THUMOS14 I3D features of W-TALC, BaS-Net, UM, CoLA and their successors (2048-d RGB+flow)",
        {"fps": 25.0, "snippet_length": 16, "snippet_stride": 16, "short_side": 256, "crops": "center",
         "flow": "tvl1", "flow_quantize": True, "streams": "i3d_rgb,i3d_flow"},
        _WTALC_SOURCES,
        ("the authors do not say which TV-L1 implementation or parameters; OpenCV's Dual TV-L1 defaults are used",
         "storing flow as 8-bit JPEG with bound 20 is the Kinetics I3D pipeline's convention; the JPEG "
         "compression itself (not only the 8-bit rounding) is not reproduced",
         "the resize rule is the Kinetics I3D release's; W-TALC's own answer on resizing is not in the sources found",
         "CoLA's own account of its features is not in the sources found; it is listed because it reads "
         "the BaS-Net layout (features/{train,test}/{rgb,flow}/<video>.npy) of the same features"),
    ),
    Preset(
        "actionformer-thumos14",
        "ActionFormer's THUMOS14 I3D features: 16-frame clips every 4 frames at the video rate (~30 fps)",
        {"fps": 30.0, "snippet_length": 16, "snippet_stride": 4, "short_side": 256, "crops": "center",
         "flow": "tvl1", "flow_quantize": True, "streams": "i3d_rgb,i3d_flow"},
        (Source("two-stream I3D on Kinetics, clips of 16 frames at the video frame rate (~30 fps), stride 4 frames "
                "(one feature per 4/30 s)", "https://github.com/happyharrycn/actionformer_release#readme"),
         Source("a feature length equal to theirs comes from 30 fps and a step of 4 frames",
                "https://github.com/Finspire13/CMCS-Temporal-Action-Localization/issues/29"),
         Source("the THUMOS14 I3D step of the CMCS features is 4 frames (base_sample_rate i3d: 4), clips of 16",
                "https://github.com/Finspire13/CMCS-Temporal-Action-Localization/blob/master/configs/thumos-I3D.json"),
         Source("the authors cannot recall the resize or crop details",
                "https://github.com/happyharrycn/actionformer_release/issues/150")),
        ("the frame rate is each video's own (most THUMOS14 videos are 30 fps, some ~25); this grid resamples "
         "every video to 30 fps",
         "resize and crop: the authors do not remember (issue 150); centre crop of a 256 short side is used",
         "whether ten-crop averaging was applied is unknown (CMCS published both resized and ten-crop features)",
         "flow method: unknown; TV-L1 stored as 8-bit is assumed"),
    ),
    Preset(
        "cmcs-anet13",
        "CMCS ActivityNet 1.3 I3D features (also used by ActionFormer's I3D ActivityNet runs): 25 fps, 16/16, "
        "ten-crop",
        {"fps": 25.0, "snippet_length": 16, "snippet_stride": 16, "short_side": 256, "crops": "10",
         "flow": "tvl1", "flow_quantize": True, "streams": "i3d_rgb,i3d_flow"},
        (Source("I3D features of ActivityNet 1.3 at 25 fps with a step of 16 frames and 16-frame snippets "
                "(anet_i3d_feature_25fps/...-step16, base_snippet_size 16)",
                "https://github.com/Finspire13/CMCS-Temporal-Action-Localization/blob/master/configs/anet13-local-I3D.json"),
         Source("the 'oversample' features are ten-crop (10x the file size), I3D not fine-tuned",
                "https://github.com/Finspire13/CMCS-Temporal-Action-Localization/issues/1"),
         Source("ActionFormer's ActivityNet I3D features are the CMCS ones",
                "https://github.com/happyharrycn/actionformer_release/issues/59")),
        ("flow method and storage: not documented; TV-L1 stored as 8-bit is assumed",
         "how the ten crops were combined into one row (mean assumed) is not documented",
         "the resize rule is not documented; the Kinetics I3D rule (short side 256) is used"),
    ),
)}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)} (or 'list')") from None


def overrides(preset: Preset, values: dict) -> dict:
    """The preset's options whose final value differs from the preset's (given explicitly)."""
    return {k: values[k] for k, v in preset.options.items() if k in values and values[k] != v}


def manifest_entry(preset: Preset, values: dict) -> dict:
    """What a manifest line records of the preset: its name and the options that overrode it."""
    return {"name": preset.name, "overrides": overrides(preset, values)}


def describe(preset: Preset) -> list[str]:
    """Lines of ``--preset list`` for one preset."""
    lines = [f"{preset.name}: {preset.summary}",
             "  options: " + " ".join(_flag(k, v) for k, v in preset.options.items())]
    lines += [f"  source: {s.fact} <{s.url}>" for s in preset.sources]
    lines += [f"  unknown: {u}" for u in preset.unknown]
    return lines


def _flag(dest: str, value) -> str:
    flag = "--" + dest.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"--no-{dest.replace('_', '-')}"
    return f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"
