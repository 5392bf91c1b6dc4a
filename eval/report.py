"""Scoring a results object and presenting it in the papers' layout.

Protocols (:data:`PROTOCOLS`): ``activitynet`` (the official ActivityNet evaluator,
:mod:`clipae.eval.detection`) and ``thumos14-kit`` (the official THUMOS14 MATLAB kit,
:mod:`clipae.eval.thumos_kit`).

Tables (:data:`LAYOUTS`), chosen by the thresholds evaluated:

- THUMOS14, tIoU 0.1:0.7 → columns 0.1 … 0.7 and the means over 0.1:0.5, 0.3:0.7 and 0.1:0.7;
- ActivityNet, tIoU 0.5:0.95 → columns 0.5, 0.75, 0.95 and the mean over the ten thresholds;
- any other set → one column per threshold and their mean.

Defaults when not given: the thresholds of the dataset, recognised from the ground truth's video
ids (THUMOS14 ids ``video_validation_*`` / ``video_test_*`` → THUMOS14's, anything else →
ActivityNet's); the subset ``test`` when the ground truth has annotated ``test`` videos, else
``validation`` (the subsets the field reports on: THUMOS14 test, ActivityNet v1.2 validation).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..core.errors import BadInput
from ..core.registry import Registry
from ..datasets.annotations import GroundTruth
from . import detection, thumos_kit
from .results import EvalInputs

#: protocol name -> ``evaluate(inputs, tious) -> (T, C) AP``
PROTOCOLS: Registry[Callable[[EvalInputs, np.ndarray], np.ndarray]] = Registry("protocol")
PROTOCOLS.add("activitynet", detection.evaluate)
PROTOCOLS.add("thumos14-kit", thumos_kit.evaluate)


@dataclass(frozen=True)
class Layout:
    tious: tuple[float, ...]                      # the full threshold set this layout is for
    columns: tuple[float, ...]                    # thresholds shown as columns
    means: dict[str, tuple[float, ...]] = field(default_factory=dict)  # name -> thresholds averaged


LAYOUTS = {
    "thumos14": Layout(tuple(thumos_kit.THUMOS14_TIOU), tuple(thumos_kit.THUMOS14_TIOU),
                       {"0.1:0.5": (0.1, 0.2, 0.3, 0.4, 0.5), "0.3:0.7": (0.3, 0.4, 0.5, 0.6, 0.7),
                        "0.1:0.7": tuple(thumos_kit.THUMOS14_TIOU)}),
    "activitynet": Layout(tuple(detection.ACTIVITYNET_TIOU), (0.5, 0.75, 0.95),
                          {"0.5:0.95": tuple(detection.ACTIVITYNET_TIOU)}),
}


class TiouError(BadInput, ValueError):
    """A ``--tiou`` value that cannot be read (one line)."""


_THUMOS_ID = re.compile(r"^video_(validation|test)_\d+$")


def parse_tious(text: str) -> np.ndarray:
    """``"0.1:0.7:0.1"`` (start:stop:step, inclusive, built like ``np.linspace``),
    ``"0.5,0.75,0.95"`` or ``"0.5"``."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            values = np.linspace(start, stop, int(round((stop - start) / step)) + 1)
        else:
            values = np.array([float(x) for x in text.split(",")])
    except ValueError:
        raise TiouError(f"--tiou {text!r}: expected start:stop:step or a comma-separated list") from None
    if not np.all((values > 0) & (values <= 1)):  # at 0 every prediction would match, overlapping or not
        raise TiouError(f"--tiou {text!r}: thresholds must lie in (0, 1]")
    return values


def is_thumos14(gt: GroundTruth) -> bool:
    return bool(gt.database) and all(_THUMOS_ID.match(v) for v in gt.database)


def default_tious(gt: GroundTruth) -> np.ndarray:
    return thumos_kit.THUMOS14_TIOU if is_thumos14(gt) else detection.ACTIVITYNET_TIOU


def default_subset(gt: GroundTruth) -> str:
    annotated = {v["subset"] for v in gt.database.values() if v["annotations"]}
    return "test" if "test" in annotated else "validation"


@dataclass
class EvalResult:
    protocol: str
    subset: str
    tious: np.ndarray        # (T,)
    classes: list[str]       # (C,)
    ap: np.ndarray           # (T, C)
    notes: list[str] = field(default_factory=list)

    @property
    def mAP(self) -> np.ndarray:
        return self.ap.mean(axis=1)

    @property
    def average(self) -> float:
        return float(self.mAP.mean())

    def layout(self) -> Layout:
        for lay in LAYOUTS.values():
            if len(lay.tious) == len(self.tious) and np.allclose(lay.tious, self.tious):
                return lay
        return Layout(tuple(self.tious), tuple(self.tious), {"avg": tuple(self.tious)})

    def _cols(self, thresholds) -> np.ndarray:
        return np.array([int(np.argmin(np.abs(self.tious - t))) for t in thresholds])

    def means(self) -> dict[str, float]:
        return {name: float(self.mAP[self._cols(ts)].mean()) for name, ts in self.layout().means.items()}

    def to_json(self) -> dict:
        return {"protocol": self.protocol, "subset": self.subset,
                "tiou": [float(t) for t in self.tious], "mAP": [float(m) for m in self.mAP],
                "average": self.average, "means": self.means(),
                "per_class": {c: [float(a) for a in self.ap[:, i]] for i, c in enumerate(self.classes)},
                "notes": list(self.notes)}

    def table(self, per_class: bool = False) -> str:
        """mAP in percent, the paper's columns; with ``per_class``, one row per class too."""
        lay = self.layout()
        cols = self._cols(lay.columns)
        head = [f"{t:.2f}".rstrip("0").rstrip(".") for t in lay.columns]
        head = [f"mAP@{h}" for h in head] + [f"avg({m})" if m != "avg" else "avg" for m in lay.means]
        rows = [["mAP"] + [f"{100 * self.mAP[c]:.2f}" for c in cols] + [f"{100 * v:.2f}" for v in self.means().values()]]
        if per_class:
            for i, name in enumerate(self.classes):
                ap = self.ap[:, i]
                rows.append([name] + [f"{100 * ap[c]:.2f}" for c in cols]
                            + [f"{100 * ap[self._cols(ts)].mean():.2f}" for ts in lay.means.values()])
        width0 = max(len(r[0]) for r in rows + [[self.protocol]])
        widths = [max(len(h), 6) for h in head]
        lines = [f"{self.protocol:<{width0}}  " + "  ".join(f"{h:>{w}}" for h, w in zip(head, widths))]
        for r in rows:
            lines.append(f"{r[0]:<{width0}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(r[1:], widths)))
        return "\n".join(lines)


def score(inputs: EvalInputs, tious, protocol: str = "activitynet", subset: str = "") -> EvalResult:
    """Evaluate ``inputs`` at ``tious`` with one of :data:`PROTOCOLS`."""
    tious = np.asarray(tious, dtype=np.float64)
    return EvalResult(protocol, subset, tious, list(inputs.classes), PROTOCOLS[protocol](inputs, tious),
                      list(inputs.notes))
