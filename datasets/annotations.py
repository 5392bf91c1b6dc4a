"""Ground truth in the ActivityNet schema, read from the formats the field uses.

``{"version", "taxonomy", "database": {video_id: {"subset", "duration",
"annotations": [{"segment": [s, e], "label": str}]}}}``

:func:`load_ground_truth` detects the format of a path among the readers of :data:`READERS`:

=================  ==========================================================================
``activitynet``    the official ActivityNet json (``version``, ``taxonomy``, ``database``)
``actionformer``   ActionFormer's json (per-video ``fps``, annotations with ``label_id``;
                   subsets spelled ``Validation`` / ``Test``)
``basnet``         the BaS-Net / UM / CoLA ``gt.json`` (only ``database``; segments as strings,
                   no durations; THUMOS14's validation videos are its ``train`` subset)
``thumos14-txt``   the official THUMOS14 folder: ``<Class>_<val|test>.txt`` lines
                   ``video_id start end``, ``Ambiguous_<subset>.txt``, ``detclasslist.txt``;
                   a folder of such files or a folder whose sub-folders hold them
``wtalc-npy``      the W-TALC / CO2-Net / DELU folder of ``videoname.npy``, ``subset.npy``,
                   ``segments.npy``, ``labels.npy`` (+ ``duration.npy``, ``classlist.npy``,
                   ``Ambiguous_test.txt``)
=================  ==========================================================================

Normalisation, whatever the format:

- subset names are lower case with the usual aliases (``train`` → ``training``,
  ``val`` → ``validation``); a THUMOS14 video (``video_validation_*``, ``video_test_*``) is
  always in the subset its id names, so every format gives THUMOS14 the subsets
  ``validation`` (the training set of weakly/unsupervised methods) and ``test``;
- segments are floats; a segment with ``end < start`` is an error, zero-length segments are kept
  (ActivityNet v1.2 has ten; evaluation counts them as ground truth that no prediction can match,
  as the official evaluator does);
- ``duration`` is ``None`` where the format has none (the THUMOS14 txt files and BaS-Net json):
  :meth:`GroundTruth.with_durations` fills it from a manifest or another ground-truth file
  (``clipae-convert-gt --durations``);
- ``Ambiguous`` segments (THUMOS14) go to :attr:`GroundTruth.ambiguous`, never to the
  annotations; a video named only in an ``Ambiguous`` file is in the database with no annotations.

ActivityNet ids carry no ``v_`` prefix while video files usually do: :func:`canonical_id` maps
both ways.

``clipae-convert-gt INPUT -o gt.json`` (:func:`main`) writes any of these as the ActivityNet json,
ambiguous segments kept under an extra top-level ``"ambiguous"`` key.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import BadInput
from ..core.fsio import write_json_atomic
from ..core.registry import Registry
from ..core.safe_npy import load_npy
from ..pipeline.manifest import read_manifest


class AnnotationError(BadInput, ValueError):
    """A ground-truth file that cannot be read (one line)."""


@dataclass
class GroundTruth:
    database: dict[str, dict]                      # ActivityNet ``database``
    classes: list[str]                             # sorted class names
    ambiguous: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # THUMOS14 ``Ambiguous``
    version: str = ""
    source_format: str = ""                        # name of the reader that produced it

    def subset(self, name: str | None) -> "GroundTruth":
        """Videos of one subset (``None``: all). Classes stay those of the whole file."""
        if name is None:
            return self
        name = normalise_subset(name)
        db = {k: v for k, v in self.database.items() if v.get("subset") == name}
        if not db:
            raise AnnotationError(f"no video in subset {name!r}; subsets here: {', '.join(self.subsets())}")
        return replace(self, database=db, ambiguous={k: v for k, v in self.ambiguous.items() if k in db})

    def subsets(self) -> list[str]:
        return sorted({str(v.get("subset")) for v in self.database.values()})

    def video_labels(self) -> dict[str, list[str]]:
        """``{video_id: sorted labels present}``."""
        return {vid: sorted({a["label"] for a in v["annotations"]}) for vid, v in self.database.items()}

    def num_instances(self) -> int:
        return sum(len(v["annotations"]) for v in self.database.values())

    def with_durations(self, durations: dict[str, float]) -> "GroundTruth":
        """A copy whose missing ``duration`` fields are taken from ``durations`` (ids matched with
        :func:`canonical_id`); videos not found there keep ``None``."""
        db = {}
        for vid, v in self.database.items():
            key = canonical_id(vid, durations)
            if v.get("duration") is None and key is not None:
                v = {**v, "duration": float(durations[key])}
            db[vid] = v
        return replace(self, database=db)

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


# --------------------------------------------------------------------------- normalisation

_SUBSET_ALIASES = {"train": "training", "val": "validation", "valid": "validation"}
_THUMOS_ID = re.compile(r"^video_(validation|test)_\d+$")
_THUMOS_FILE_SUBSET = {"val": "validation", "test": "test"}


def normalise_subset(name: str, video_id: str | None = None) -> str:
    """Lower case with the usual aliases; a THUMOS14 id decides its own subset."""
    if video_id is not None:
        m = _THUMOS_ID.match(video_id)
        if m:
            return m.group(1)
    name = str(name).strip().lower()
    return _SUBSET_ALIASES.get(name, name)


def _segment(value, where: str) -> list[float]:
    try:
        s, e = (float(x) for x in value)
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: segment {value!r} is not two numbers") from None
    if not (math.isfinite(s) and math.isfinite(e)):
        raise AnnotationError(f"{where}: segment {value!r} is not finite")
    if e < s:
        raise AnnotationError(f"{where}: segment {value!r} ends before it starts")
    return [s, e]


def _finish(database: dict[str, dict], ambiguous: dict, version: str, fmt: str,
            classes: list[str] | None = None) -> GroundTruth:
    present = sorted({a["label"] for v in database.values() for a in v["annotations"]})
    if classes is not None:
        unknown = sorted(set(present) - set(classes))
        if unknown:
            raise AnnotationError(f"labels not in the class list: {', '.join(unknown)}")
    return GroundTruth(database, sorted(classes if classes is not None else present),
                       {k: [tuple(s) for s in v] for k, v in ambiguous.items()}, version, fmt)


# --------------------------------------------------------------------------- json formats

def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError:
        raise AnnotationError(f"{path}: not a UTF-8 text file") from None


def _json_probe(path: Path):
    """The parsed json of a ``.json`` file with a ``database``, else ``None``."""
    if not (path.is_file() and path.suffix.lower() == ".json"):
        return None
    obj = _read_json(path)
    return obj if isinstance(obj, dict) and isinstance(obj.get("database"), dict) else None


def _from_database(fmt: str, path: Path, obj: dict) -> GroundTruth:
    db: dict[str, dict] = {}
    for vid, v in obj["database"].items():
        if not isinstance(v, dict) or not isinstance(v.get("annotations", []), list):
            raise AnnotationError(f"{path}: video {vid!r} is not an ActivityNet entry")
        anns = []
        for i, a in enumerate(v.get("annotations", [])):
            where = f"{path}: {vid} annotation {i}"
            if "label" not in a or "segment" not in a:
                raise AnnotationError(f"{where}: needs 'label' and 'segment'")
            anns.append({"segment": _segment(a["segment"], where), "label": str(a["label"])})
        duration = v.get("duration")
        entry = {"subset": normalise_subset(v.get("subset", ""), vid),
                 "duration": None if duration is None else float(duration),
                 "annotations": anns}
        for extra in ("url", "fps"):
            if extra in v:
                entry[extra] = v[extra]
        db[vid] = entry
    return _finish(db, obj.get("ambiguous", {}), str(obj.get("version", "")), fmt)


def _is_actionformer(path: Path, probe) -> bool:
    if probe is None:
        return False
    first = next(iter(probe["database"].values()), {})
    return "fps" in first or any("label_id" in a for a in first.get("annotations", []))


def _is_activitynet(path: Path, probe) -> bool:
    return probe is not None and ("version" in probe or "taxonomy" in probe)


def _is_basnet(path: Path, probe) -> bool:
    return probe is not None and not ("version" in probe or "taxonomy" in probe)


# --------------------------------------------------------------------------- THUMOS14 txt

_TXT_NAME = re.compile(r"^(?P<cls>.+)_(?P<subset>val|test)\.txt$")


def _thumos_txt_folders(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    folders = [path] + sorted(p for p in path.iterdir() if p.is_dir())
    return [f for f in folders if any(_TXT_NAME.match(p.name) for p in f.glob("*.txt"))]


def _read_txt_lines(path: Path) -> list[tuple[str, float, float]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise AnnotationError(f"{path}:{n}: expected 'video_id start end', got {line.strip()!r}")
        s, e = _segment(parts[1:], f"{path}:{n}")
        rows.append((parts[0], s, e))
    return rows


def _read_thumos_txt(path: Path) -> GroundTruth:
    db: dict[str, dict] = {}
    ambiguous: dict[str, list] = {}
    classes: set[str] = set()
    for folder in _thumos_txt_folders(path):
        files = {}
        for p in sorted(folder.glob("*.txt")):
            m = _TXT_NAME.match(p.name)
            if m:
                files.setdefault(m.group("subset"), {})[m.group("cls")] = p
        listed = _detclasslist(folder / "detclasslist.txt")
        for subset_tag, by_class in files.items():
            subset = _THUMOS_FILE_SUBSET[subset_tag]
            names = listed if listed is not None else sorted(c for c in by_class if c != "Ambiguous")
            missing = [c for c in names if c not in by_class]
            if missing:
                raise AnnotationError(f"{folder}: no {missing[0]}_{subset_tag}.txt for a class of detclasslist.txt")
            classes.update(names)
            for cls in names:
                for vid, s, e in _read_txt_lines(by_class[cls]):
                    entry = db.setdefault(vid, {"subset": normalise_subset(subset, vid), "duration": None, "annotations": []})
                    entry["annotations"].append({"segment": [s, e], "label": cls})
            if "Ambiguous" in by_class:
                for vid, s, e in _read_txt_lines(by_class["Ambiguous"]):
                    db.setdefault(vid, {"subset": normalise_subset(subset, vid), "duration": None, "annotations": []})
                    ambiguous.setdefault(vid, []).append((s, e))
    return _finish(db, ambiguous, "THUMOS14", "thumos14-txt", sorted(classes))


def _detclasslist(path: Path) -> list[str] | None:
    """Class names of ``detclasslist.txt`` (lines ``<THUMOS id> <name>``), in file order."""
    if not path.is_file():
        return None
    names = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if parts:
            if len(parts) != 2 or not parts[0].isdigit():
                raise AnnotationError(f"{path}:{n}: expected '<class id> <name>', got {line.strip()!r}")
            names.append(parts[1])
    return names


# --------------------------------------------------------------------------- W-TALC npy

_WTALC_FILES = ("videoname.npy", "subset.npy", "segments.npy", "labels.npy")


def _is_wtalc(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in _WTALC_FILES)


def _text(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _read_wtalc(path: Path) -> GroundTruth:
    def load(name):
        try:
            return load_npy(path / name)
        except (ValueError, OSError) as e:  # UnsafeFileError included
            raise AnnotationError(f"{path / name}: cannot be read ({e})") from None

    names = [_text(x) for x in load("videoname.npy")]
    subsets = [_text(x) for x in load("subset.npy")]
    segments, labels = load("segments.npy"), load("labels.npy")
    if not (len(names) == len(subsets) == len(segments) == len(labels)):
        raise AnnotationError(f"{path}: videoname, subset, segments and labels differ in length")
    durations = (np.asarray(load("duration.npy"), dtype=np.float64).reshape(len(names), -1)[:, 0]
                 if (path / "duration.npy").is_file() else [None] * len(names))
    classes = [_text(x) for x in load("classlist.npy")] if (path / "classlist.npy").is_file() else None
    db: dict[str, dict] = {}
    for vid, subset, segs, labs, dur in zip(names, subsets, segments, labels, durations):
        if len(segs) != len(labs):
            raise AnnotationError(f"{path}: video {vid} has {len(segs)} segments but {len(labs)} labels")
        anns = [{"segment": _segment(s, f"{path}: {vid}"), "label": _text(lab)} for s, lab in zip(segs, labs)]
        db[vid] = {"subset": normalise_subset(subset, vid), "duration": None if dur is None else float(dur),
                   "annotations": anns}
    ambiguous: dict[str, list] = {}
    for amb in sorted(path.glob("Ambiguous_*.txt")):
        tag = amb.stem.split("_", 1)[1]
        for vid, s, e in _read_txt_lines(amb):
            db.setdefault(vid, {"subset": normalise_subset(_THUMOS_FILE_SUBSET.get(tag, tag), vid),
                                "duration": None, "annotations": []})
            ambiguous.setdefault(vid, []).append((s, e))
    return _finish(db, ambiguous, "W-TALC annotations", "wtalc-npy", classes)


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class GroundTruthReader:
    """``detect(path, probe)`` and ``read(path, probe)``; ``probe`` is the parsed json of a
    ``.json`` file that has a ``database`` (``None`` otherwise), so a file is parsed once."""
    name: str
    detect: Callable[[Path, dict | None], bool]
    read: Callable[[Path, dict | None], GroundTruth]


#: Readers tried in order by :func:`load_ground_truth`; the first whose ``detect`` is true reads.
READERS: Registry[GroundTruthReader] = Registry("ground-truth format")
for _reader in (
    GroundTruthReader("actionformer", _is_actionformer, partial(_from_database, "actionformer")),
    GroundTruthReader("activitynet", _is_activitynet, partial(_from_database, "activitynet")),
    GroundTruthReader("basnet", _is_basnet, partial(_from_database, "basnet")),
    GroundTruthReader("wtalc-npy", lambda p, _: _is_wtalc(p), lambda p, _: _read_wtalc(p)),
    GroundTruthReader("thumos14-txt", lambda p, _: bool(_thumos_txt_folders(p)), lambda p, _: _read_thumos_txt(p)),
):
    READERS.add(_reader.name, _reader)


def load_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read ground truth from ``path`` (format detected, see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: no such file or folder")
    probe = _json_probe(path)
    for reader in READERS.values():
        if reader.detect(path, probe):
            return reader.read(path, probe)
    raise AnnotationError(f"{path}: unrecognised ground-truth format (known: {', '.join(READERS)})")


def load_durations(path: str | os.PathLike) -> dict[str, float]:
    """``{video_id: seconds}`` from a manifest (``duration_s``) or a ground-truth file with durations."""
    path = Path(path)
    if path.is_file() and path.suffix == ".jsonl":
        return {vid: float(r["duration_s"]) for vid, r in read_manifest(path).items()
                if r.get("status") == "ok" and r.get("duration_s") is not None}
    gt = load_ground_truth(path)
    return {vid: float(v["duration"]) for vid, v in gt.database.items() if v.get("duration") is not None}


# --------------------------------------------------------------------------- clipae-convert-gt

def main(argv: list[str] | None = None) -> int:
    """``clipae-convert-gt INPUT -o gt.json``: any ground-truth format → the ActivityNet json."""
    parser = argparse.ArgumentParser(prog="clipae-convert-gt", description=main.__doc__)
    parser.add_argument("input", help="ground-truth file or folder (format detected)")
    parser.add_argument("-o", "--output", required=True, help="ActivityNet json to write")
    parser.add_argument("--durations", help="manifest.jsonl or ground-truth file giving the durations this format lacks")
    parser.add_argument("--subset", help="keep only this subset")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    gt = load_ground_truth(args.input)
    if args.durations:
        gt = gt.with_durations(load_durations(args.durations))
    gt = gt.subset(args.subset)
    out = Path(args.output)
    write_json_atomic(out, gt.to_json(), indent=1)
    no_duration = sum(v.get("duration") is None for v in gt.database.values())
    per_subset = ", ".join(f"{s}: {sum(v['subset'] == s for v in gt.database.values())}" for s in gt.subsets())
    print(f"{args.input} ({gt.source_format}) -> {out}: {len(gt.database)} videos ({per_subset}), "
          f"{gt.num_instances()} instances, {len(gt.classes)} classes, "
          f"{sum(map(len, gt.ambiguous.values()))} ambiguous segments"
          + (f", {no_duration} videos without duration" if no_duration else ""))
    return 0
