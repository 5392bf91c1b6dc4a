"""Ground truth in the ActivityNet schema, read from the formats the field uses.

``{"version", "taxonomy", "database": {video_id: {"subset", "duration",
"annotations": [{"segment": [s, e], "label": str}]}}}``

:func:`load_ground_truth` detects the format of a path. ActivityNet ids carry no ``v_`` prefix
while video files usually do: :func:`canonical_id` maps both ways.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


class AnnotationError(ValueError):
    """A ground-truth file that cannot be read (one line)."""


@dataclass
class GroundTruth:
    database: dict[str, dict]                      # ActivityNet ``database``
    classes: list[str]                             # sorted class names
    ambiguous: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # THUMOS14 ``Ambiguous``
    version: str = ""

    def subset(self, name: str | None) -> "GroundTruth":
        """Videos of one subset (``None``: all). Classes stay those of the whole file."""
        if name is None:
            return self
        db = {k: v for k, v in self.database.items() if v.get("subset") == name}
        if not db:
            subsets = sorted({v.get("subset") for v in self.database.values()})
            raise AnnotationError(f"no video in subset {name!r}; subsets here: {', '.join(map(str, subsets))}")
        return GroundTruth(db, self.classes, {k: v for k, v in self.ambiguous.items() if k in db}, self.version)

    def video_labels(self) -> dict[str, list[str]]:
        """``{video_id: sorted labels present}``."""
        return {vid: sorted({a["label"] for a in v["annotations"]}) for vid, v in self.database.items()}

    def to_json(self) -> dict:
        out = {"version": self.version, "taxonomy": [], "database": self.database}
        if self.ambiguous:
            out["ambiguous"] = {k: [list(s) for s in v] for k, v in self.ambiguous.items()}
        return out


def canonical_id(video_id: str, known: set[str] | dict) -> str | None:
    """``video_id`` as spelled in ``known``, trying with and without the ``v_`` prefix."""
    if video_id in known:
        return video_id
    alt = video_id[2:] if video_id.startswith("v_") else "v_" + video_id
    return alt if alt in known else None


def _from_activitynet(obj: dict) -> GroundTruth:
    db = obj["database"]
    classes = sorted({a["label"] for v in db.values() for a in v.get("annotations", [])})
    amb = {k: [tuple(s) for s in v] for k, v in obj.get("ambiguous", {}).items()}
    return GroundTruth(db, classes, amb, str(obj.get("version", "")))


def load_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read ground truth from ``path`` (format detected)."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix == ".json":
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{path}: not valid JSON ({e})") from None
        if isinstance(obj, dict) and isinstance(obj.get("database"), dict):
            return _from_activitynet(obj)
    raise AnnotationError(f"{path}: unrecognised ground-truth format")
