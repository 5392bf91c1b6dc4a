"""Training data over the manifest: memory-mapped features, ground-truth labels, sampling, batching.

A batch is a dict of tensors:

- ``<stream>``: ``(B, T, dim)`` float32 for each stream the configuration reads
- ``mask``: ``(B, T)`` bool, True on real snippets (False on padding)
- ``has_audio``: ``(B,)`` bool; False means the ``vggish`` rows are placeholders, which the model zeroes
- ``index``: ``(B,)`` long, the video's position in the training list (memory bank slot)
- ``labels``: ``(B, K)`` float multi-hot video labels (true classes, or one-hot cluster ids)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.errors import BadInput
from ..core.grid import SnippetGrid
from ..datasets.annotations import GroundTruth, canonical_id
from ..pipeline.manifest import ManifestError, load_stream, read_manifest, stream_path
from .trained_on import StreamRecord, TrainedOn


class DataError(BadInput, ValueError):
    """Training data that cannot be used (one line)."""


def as_rows(a: np.ndarray) -> np.ndarray:
    """A stream's ``(T, dim)`` rows; a ``(T, crops, dim)`` stream (``clipae-extract --keep-crops``)
    is averaged over its crops, as extraction does without ``--keep-crops``."""
    return np.asarray(a, dtype=np.float32).mean(axis=1) if a.ndim == 3 else a


def _examples(names: list[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (", ..." if len(names) > n else "")


@dataclass
class FeatureStore:
    """The ``ok`` videos of a manifest and their feature files (opened memory-mapped on first use)."""
    manifest_path: Path
    records: dict[str, dict]
    _maps: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, manifest_path: str | Path) -> "FeatureStore":
        path = Path(manifest_path)
        if not path.is_file():
            raise DataError(f"{path}: no such manifest")
        try:
            records = {vid: r for vid, r in read_manifest(path).items() if r.get("status") == "ok"}
        except (ManifestError, OSError) as e:
            raise DataError(str(e)) from None
        if not records:
            raise DataError(f"{path}: no video with status 'ok'")
        return cls(path, records)

    def check_streams(self, video_ids: list[str], streams: list[str]) -> dict[str, int]:
        """``{stream: dim}``; raises when a video lacks a stream or dims disagree."""
        dims: dict[str, int] = {}
        for stream in streams:
            lacking = [v for v in video_ids if stream not in self.records[v].get("streams", {})]
            if lacking:
                raise DataError(f"{len(lacking)} of {len(video_ids)} videos have no {stream!r} stream in "
                                f"{self.manifest_path} ({_examples(lacking)}); the configuration needs it "
                                f"(streams needed: {', '.join(streams)})")
            found = {int(self.records[v]["streams"][stream]["dim"]) for v in video_ids}
            if len(found) != 1:
                raise DataError(f"stream {stream!r} has several dims in {self.manifest_path}: {sorted(found)}")
            dims[stream] = found.pop()
        return dims

    def load(self, video_id: str, streams: list[str]) -> dict[str, np.ndarray]:
        """``{stream: (T, dim)}`` memory-mapped arrays of one video."""
        out = {}
        for s in streams:
            key = (video_id, s)
            if key not in self._maps:
                rec = self.records[video_id]
                a = as_rows(load_stream(self.manifest_path, rec, s))
                n = int(rec["num_snippets"])
                if a.ndim != 2 or a.shape[0] != n:
                    raise DataError(f"{video_id}: {s} has shape {a.shape}, the manifest says {n} snippets")
                self._maps[key] = a
            out[s] = self._maps[key]
        return out

    def has_audio(self, video_id: str) -> bool:
        return bool(self.records[video_id].get("has_audio", False))

    def num_snippets(self, video_id: str) -> int:
        return int(self.records[video_id]["num_snippets"])


def load_stream_path(store: FeatureStore, video_id: str, stream: str) -> Path:
    """The feature file of one video's stream."""
    return stream_path(store.manifest_path, store.records[video_id], stream)


def extraction_settings(store: FeatureStore, video_ids: list[str], streams: list[str]) -> TrainedOn:
    """What the training videos' features were made with (:class:`~clipae.models.trained_on.TrainedOn`):
    what single-video localisation needs to re-extract features exactly like the training ones."""
    recs = [store.records[v] for v in video_ids]
    grids = {SnippetGrid.from_record(r) for r in recs}
    if len(grids) != 1:
        raise DataError(f"the training videos use {len(grids)} different snippet grids: "
                        f"{sorted(tuple(g.as_dict().values()) for g in grids)}")
    grid = grids.pop()
    records, weights_of = {}, {}
    for s in streams:
        info = recs[0]["streams"][s]
        settings = [r["streams"][s].get("settings") for r in recs]
        if any(x != settings[0] for x in settings):
            raise DataError(f"stream {s!r} was extracted with different settings across training videos")
        records[s] = StreamRecord(int(info["dim"]), info.get("dtype"), settings[0] or {},
                                  info.get("options", {}))  # the extractor's options, for clipae-localize
        weights = {str(r.get("weights", {}).get(s)) for r in recs}
        if len(weights) != 1:
            raise DataError(f"stream {s!r} was extracted with different weights across training videos")
        weights_of[s] = weights.pop()
    return TrainedOn(grid, records, weights_of, sorted({str(r.get("config_hash", "")) for r in recs}))


@dataclass
class TrainingSet:
    """The videos of the training subset that have features, with their labels."""
    video_ids: list[str]             # manifest ids, in training order (index = memory-bank slot)
    gt_ids: list[str]                # the same videos as spelled in the ground truth
    classes: list[str]               # class names of the ground truth
    labels: np.ndarray               # (N, K) multi-hot true labels (weakly mode; NMI / ARI)
    main_label: np.ndarray           # (N,) class of longest annotated duration, -1 when none
    missing: list[str]               # ground-truth videos skipped for lack of features
    segments: list[list[tuple[float, float]]] = field(default_factory=list)  # annotated [s, e] seconds per video

    def take(self, idx: list[int]) -> "TrainingSet":
        """The videos at positions ``idx``, in that order."""
        return TrainingSet([self.video_ids[i] for i in idx], [self.gt_ids[i] for i in idx], self.classes,
                           self.labels[idx], self.main_label[idx], self.missing,
                           [self.segments[i] for i in idx] if self.segments else [])


def split_validation(tset: TrainingSet, fraction: float, seed: int) -> tuple[TrainingSet, TrainingSet | None]:
    """``(train, validation)``: ``round(fraction · N)`` videos (at least one when ``fraction > 0``)
    drawn by a permutation seeded with ``seed`` are held out; both keep their original order."""
    n = len(tset.video_ids)
    n_val = 0 if fraction <= 0 else max(1, int(round(fraction * n)))
    if n_val == 0:
        return tset, None
    if n_val >= n:
        raise DataError(f"data.val_fraction {fraction} leaves no training video out of {n}")
    held = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    return (tset.take([i for i in range(n) if i not in held]), tset.take([i for i in range(n) if i in held]))


def foreground_mask(segments: list[tuple[float, float]], record: dict) -> np.ndarray:
    """``(T,)`` bool: snippets of a manifest line whose centre lies inside an annotated segment."""
    grid = SnippetGrid.from_record(record)
    centres = grid.centre_s(np.arange(int(record["num_snippets"])))
    out = np.zeros(len(centres), dtype=bool)
    for a, b in segments:
        out |= (centres >= a) & (centres < b)
    return out


def training_set(store: FeatureStore, gt: GroundTruth, subset: str, skip_missing: bool) -> TrainingSet:
    """Videos of ``subset`` matched to the manifest (``v_`` prefix tolerated)."""
    sub = gt.subset(subset)
    vids, gids, missing = [], [], []
    for gid in sub.database:
        mid = canonical_id(gid, store.records)
        if mid is None:
            missing.append(gid)
        else:
            vids.append(mid)
            gids.append(gid)
    if missing and not skip_missing:
        raise DataError(f"{len(missing)} of {len(sub.database)} videos of subset {subset!r} are missing from "
                        f"{store.manifest_path} or failed extraction ({_examples(missing)}); extract them or "
                        f"pass --set data.skip_missing=true")
    if not vids:
        raise DataError(f"no video of subset {subset!r} has features in {store.manifest_path}")
    cls_index = {c: i for i, c in enumerate(gt.classes)}
    labels = np.zeros((len(vids), len(gt.classes)), dtype=np.float32)
    main = np.full(len(vids), -1, dtype=np.int64)
    segments: list[list[tuple[float, float]]] = []
    for i, gid in enumerate(gids):
        durations: dict[str, float] = {}
        segments.append([])
        for a in sub.database[gid].get("annotations", []):
            labels[i, cls_index[a["label"]]] = 1.0
            s, e = a["segment"]
            segments[-1].append((float(s), float(e)))
            durations[a["label"]] = durations.get(a["label"], 0.0) + max(float(e) - float(s), 0.0)
        if durations:
            main[i] = cls_index[max(sorted(durations), key=durations.get)]
    return TrainingSet(vids, gids, list(gt.classes), labels, main, missing, segments)


def compute_feature_stats(store: FeatureStore, video_ids: list[str], streams: list[str],
                          audio_stream: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-stream, per-dimension mean and std over all training snippets (float64 sums).

    Audio statistics skip videos without an audio track (their rows are placeholder zeros).
    Every row is read here, so a video with NaN or infinite values is refused here, by name.
    """
    stats = {}
    for s in streams:
        total, sq, n = None, None, 0
        for v in video_ids:
            if s == audio_stream and not store.has_audio(v):
                continue
            a = np.asarray(store.load(v, [s])[s], dtype=np.float64)
            if not np.isfinite(a).all():
                raise DataError(f"{v}: non-finite values in {s} ({load_stream_path(store, v, s)}); "
                                "extract this video again")
            total = a.sum(0) if total is None else total + a.sum(0)
            sq = (a * a).sum(0) if sq is None else sq + (a * a).sum(0)
            n += a.shape[0]
        if n == 0:  # no training video has audio: identity normalisation, the audio is masked anyway
            dim = int(store.records[video_ids[0]]["streams"][s]["dim"])
            stats[s] = (np.zeros(dim, np.float32), np.ones(dim, np.float32))
            continue
        mean = total / n
        std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
        stats[s] = (mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32))
    return stats


def sample_indices(length: int, num: int, rng: np.random.Generator | None) -> np.ndarray:
    """``num`` snippet indices of a ``length``-snippet video, in temporal order.

    Training (``rng`` given): the video is cut into ``num`` equal spans and one random snippet is
    drawn from each (the random perturbation of BaS-Net / CoLA / UM); short videos repeat snippets.
    Without ``rng``: the centre of each span.
    """
    edges = np.arange(num + 1) * length / num
    lo = np.floor(edges[:-1]).astype(np.int64)
    hi = np.maximum(np.floor(edges[1:]).astype(np.int64), lo + 1)  # exclusive, at least one snippet
    hi = np.minimum(hi, length)
    if rng is None:
        return (lo + hi - 1) // 2
    return lo + np.floor(rng.random(num) * (hi - lo)).astype(np.int64)


class VideoDataset(Dataset):
    """Videos as dicts of tensors; ``num_segments`` snippets sampled per item when given, else all."""

    def __init__(self, store: FeatureStore, video_ids: list[str], streams: list[str],
                 labels: np.ndarray | None = None, num_segments: int | None = None, seed: int = 0):
        self.store, self.video_ids, self.streams = store, video_ids, streams
        self.labels, self.num_segments = labels, num_segments
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch_key: int) -> None:
        """Makes the random snippet sampling a function of (seed, epoch_key, video)."""
        self.epoch = epoch_key

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, i: int) -> dict:
        vid = self.video_ids[i]
        arrays = self.store.load(vid, self.streams)
        length = self.store.num_snippets(vid)
        if self.num_segments is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            idx = sample_indices(length, self.num_segments, rng)
        else:
            idx = slice(None)
        item = {s: torch.from_numpy(np.array(a[idx], dtype=np.float32)) for s, a in arrays.items()}  # a copy
        item["has_audio"] = torch.tensor(self.store.has_audio(vid))   # the model ignores the audio rows when False
        item["index"] = torch.tensor(i, dtype=torch.long)
        if self.labels is not None:
            item["labels"] = torch.from_numpy(self.labels[i])
        return item


def collate(items: list[dict]) -> dict:
    """Pads streams to the longest video of the batch and adds ``mask`` ``(B, T)``."""
    streams = [k for k, v in items[0].items() if v.ndim == 2]
    lengths = [items[j][streams[0]].shape[0] for j in range(len(items))]
    t = max(lengths)
    out: dict = {}
    for s in streams:
        dim = items[0][s].shape[1]
        buf = torch.zeros(len(items), t, dim)
        for j, it in enumerate(items):
            buf[j, : lengths[j]] = it[s]
        out[s] = buf
    out["mask"] = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    for k in ("has_audio", "index", "labels"):
        if k in items[0]:
            out[k] = torch.stack([it[k] for it in items])
    return out


def epoch_order(n: int, seed: int, epoch_key: int, rank: int = 0, world: int = 1) -> list[int]:
    """This rank's share of a seeded permutation of ``n`` items (padded so every rank gets as many)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch_key)
    perm = torch.randperm(n, generator=g).tolist()
    per_rank = math.ceil(n / world)
    perm = (perm * math.ceil(per_rank * world / n))[: per_rank * world]
    return perm[rank::world]
