"""Zero-shot localisation without training: the ``clip`` stream against CLIP text embeddings.

A training-free baseline (as in zero-shot temporal action localisation work such as T3AL): the
class names become prompt-ensembled text embeddings (:mod:`clipae.extractors.clip_text`, the
same checkpoint as the ``clip`` stream), and for a video's ``clip`` rows ``x (T, 512)`` (unit
norm; kept crops are averaged and renormalised) with text rows ``w (C, 512)`` and CLIP's logit
scale ``s`` (100):

- ``cas (T, C)``: ``softmax_c(s · x_t · w_c)``, which class each snippet looks like;
- ``video_scores (C,)``: ``softmax_c(s · normalize(mean_t x_t) · w_c)``;
- ``attention (T,)``: ``max_c x_t · w_c`` min-max normalised over the video (constant: 0.5), how
  much a snippet looks like any of the actions.

These go through the same proposal code as a trained model (:mod:`clipae.eval.proposals`, its
default settings). ``clipae-localize VIDEO --zero-shot NAMES`` does it for one video,
``clipae-eval --zero-shot NAMES --manifest M`` for a dataset.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.grid import SnippetGrid
from ..datasets.annotations import GroundTruth, load_ground_truth
from ..pipeline.manifest import load_stream, read_manifest
from .predict import PredictError, select_videos, to_entries
from .proposals import ProposalConfig, Proposals, generate_proposals

STREAM = "clip"


def read_class_names(spec: str | os.PathLike) -> list[str]:
    """Class names: one per line of a ``.txt`` file (``#`` comments), or the classes of a ground truth."""
    path = Path(spec)
    if path.suffix == ".txt" and path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise PredictError(f"cannot read the class names {path}: {e}") from None
        names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    elif path.exists():
        names = list(load_ground_truth(path).classes)
    else:
        raise PredictError(f"{path}: no such file (class names: a .txt file, one per line, or a ground truth)")
    if len(set(names)) != len(names):
        raise PredictError(f"{path}: a class name appears twice")
    if not names:
        raise PredictError(f"{path}: no class names")
    return names


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def zero_shot_outputs(rows: np.ndarray, text: np.ndarray, logit_scale: float = 100.0) -> dict[str, np.ndarray]:
    """``rows (T, 512)`` or ``(T, crops, 512)``, ``text (C, 512)`` → ``cas (T, C)``, ``attention (T,)``,
    ``video_scores (C,)``, float32 in [0, 1] (see the module docstring)."""
    rows = np.asarray(rows, dtype=np.float32)
    rows = _unit(rows.mean(axis=1) if rows.ndim == 3 else rows)
    text = _unit(np.asarray(text, dtype=np.float32))
    sim = rows @ text.T                                                   # (T, C) cosine
    best = sim.max(axis=1)
    spread = best.max() - best.min()
    attention = (best - best.min()) / spread if spread > 1e-8 else np.full_like(best, 0.5)
    video = _unit(rows.mean(axis=0)) @ text.T
    return {"cas": _softmax(logit_scale * sim).astype(np.float32), "attention": attention.astype(np.float32),
            "video_scores": _softmax(logit_scale * video).astype(np.float32)}


def check_text_weights(clip_weights: str | None, random_weights: bool) -> None:
    """The text tower must come from the checkpoint the ``clip`` rows were made with."""
    if clip_weights == "random" and not random_weights:
        raise PredictError("the clip features were made with random weights; pass --random-weights so the text "
                           "tower is the same random network")
    if random_weights and clip_weights not in (None, "random"):
        raise PredictError(f"--random-weights, but the clip features were made with {clip_weights}")


def text_tower(model_name: str, clip_weights: str | None, weights_dir: str | None, random_weights: bool,
               device: str = "cpu", weights_path: str | None = None):
    """:class:`~clipae.extractors.clip_text.CLIPText` of the checkpoint the ``clip`` rows came from."""
    from ..extractors.clip_text import CLIPText  # the open_clip model, only when needed
    check_text_weights(clip_weights, random_weights)
    tower = CLIPText(model_name, weights_path, random_weights, weights_dir, device)
    if clip_weights not in (None, "random", tower.weights_id):
        raise PredictError(f"the clip features were made with {clip_weights} but the text tower's checkpoint is "
                           f"{tower.weights_id}; pass the same file (--weights-dir or --clip-weights)")
    return tower


def localize_rows(rows: np.ndarray, text: np.ndarray, logit_scale: float, grid: SnippetGrid,
                  duration_s: float | None, cfg: ProposalConfig | None = None) -> tuple[dict, Proposals]:
    """The zero-shot outputs and the proposals of one video."""
    out = zero_shot_outputs(rows, text, logit_scale)
    return out, generate_proposals(out["cas"], out["attention"], out["video_scores"], grid, duration_s,
                                   cfg or ProposalConfig())


def predict_zero_shot(manifest: str | os.PathLike, names: list[str], gt: GroundTruth | None, subset: str | None,
                      weights_dir: str | None = None, random_weights: bool = False, device: str = "cpu",
                      allow_missing: bool = False, quiet: bool = False,
                      weights_path: str | None = None) -> tuple[dict[str, list[dict]], list[str]]:
    """``({video_id: [entry, ...]}, notes)`` for the chosen videos of ``manifest`` (as
    :func:`clipae.eval.predict.predict_results` chooses them), from their ``clip`` rows."""
    records = read_manifest(manifest)
    videos = select_videos(records, gt, subset, allow_missing)
    if not videos:
        raise PredictError(f"{manifest}: no video to predict")
    lacking = [vid for vid, r in videos if STREAM not in r.get("streams", {})]
    if lacking:
        raise PredictError(f"{len(lacking)} videos have no clip stream in {manifest} (e.g. {lacking[0]!r}); "
                           "extract it with clipae-extract --streams clip")
    models = {r["streams"][STREAM].get("settings", {}).get("model", "ViT-B-16") for _, r in videos}
    weights = {r.get("weights", {}).get(STREAM) for _, r in videos}
    if len(models) != 1 or len(weights) != 1:
        raise PredictError(f"the clip features of {manifest} come from several models or checkpoints")
    tower = text_tower(models.pop(), weights.pop(), weights_dir, random_weights, device, weights_path)
    text = tower.embed(names)
    results: dict[str, list[dict]] = {}
    for vid, record in tqdm(videos, desc="zero-shot", unit="video", disable=quiet or not sys.stderr.isatty()):
        rows = np.asarray(load_stream(manifest, record, STREAM))
        _, props = localize_rows(rows, text, tower.logit_scale, SnippetGrid.from_record(record),
                                 record.get("duration_s"))
        results[vid] = to_entries(props, list(names), keep_cluster=False)
    notes = [f"zero-shot: {tower.model_name} text tower ({tower.weights_id}), {len(names)} classes"]
    if gt is not None and len(videos) < len(gt.subset(subset).database):
        notes.append(f"{len(gt.subset(subset).database) - len(videos)} videos of subset {subset!r} "
                     "missing from the manifest")
    return results, notes
