"""A trained run folder, ready for inference: ``load_run(run_dir).predict(features, has_audio)``.

Outputs of :meth:`TrainedRun.predict` (numpy, float32, all in [0, 1]), with ``T`` the video's
snippets and ``K = len(run.classes)``:

- ``cas`` ``(T, K)``: per-snippet class probabilities — the softmax over the K classes of each
  stream's T-CAM, averaged over the RGB and flow streams. It has no background class: it says which
  class a snippet would be if it is an action; whether it is one is ``attention``.
- ``attention`` ``(T,)``: foreground attention, averaged over the two streams.
- ``video_scores`` ``(K,)``: per-class video scores — the softmax over the K classes of the
  attention-weighted mean of each stream's T-CAM, averaged over the two streams. They sum to 1.

For an unsupervised run the K outputs are cluster ids ``"0" … "K-1"``; ``train_assignments`` gives
the cluster of each training video in the last round (the labels the classifier was trained on), on
which evaluation maps clusters to classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from .clipae import CLIPAE, build_model
from .config import Config, saved_run_config
from .data import FeatureStore, as_rows, collate
from .train import CHECKPOINT, read_checkpoint
from .trained_on import RunError, TrainedOn


@dataclass
class TrainedRun:
    run_dir: Path
    config: Config
    classes: list[str]
    extraction: TrainedOn
    train_assignments: dict[str, int]
    model: CLIPAE
    device: torch.device
    dims: dict[str, int] = field(default_factory=dict)

    @property
    def streams(self) -> list[str]:
        """The feature streams :meth:`predict` needs."""
        return list(self.dims)

    def _item(self, features: dict[str, np.ndarray], has_audio: bool) -> dict:
        lengths = set()
        item = {}
        for s, d in self.dims.items():
            if s not in features:
                raise RunError(f"the run needs stream {s!r}; given: {', '.join(sorted(features)) or 'none'}")
            a = np.array(as_rows(np.asarray(features[s])), dtype=np.float32)  # a writable copy
            if a.ndim != 2 or a.shape[1] != d:
                raise RunError(f"stream {s!r} must be (T, {d}), got {a.shape}")
            lengths.add(a.shape[0])
            item[s] = torch.from_numpy(a)
        if len(lengths) != 1:
            raise RunError(f"streams have different numbers of snippets: {sorted(lengths)}")
        if lengths.pop() == 0:
            raise RunError("a video needs at least one snippet")
        item["has_audio"] = torch.tensor(bool(has_audio))
        item["index"] = torch.tensor(0)
        return item

    @torch.no_grad()
    def _predict_items(self, items: list[dict]) -> list[dict]:
        batch = {k: v.to(self.device) for k, v in collate(items).items()}
        out = self.model.predict(batch)
        lengths = batch["mask"].sum(1).tolist()
        return [{"cas": out["cas"][i, :n].float().cpu().numpy(), "attention": out["attention"][i, :n].float().cpu().numpy(),
                 "video_scores": out["video_scores"][i].float().cpu().numpy()} for i, n in enumerate(lengths)]

    def predict(self, features: dict[str, np.ndarray], has_audio: bool) -> dict[str, np.ndarray]:
        """``features``: ``{stream: (T, dim)}`` for every stream of :attr:`streams` (extra ones ignored)."""
        return self._predict_items([self._item(features, has_audio)])[0]

    def predict_manifest(self, manifest: str | Path, video_ids: list[str] | None = None,
                         batch_size: int = 8) -> dict[str, dict[str, np.ndarray]]:
        """:meth:`predict` for videos of a manifest (default: all ``ok`` ones), batched by length."""
        store = FeatureStore.open(manifest)
        ids = list(store.records) if video_ids is None else list(video_ids)
        unknown = [v for v in ids if v not in store.records]
        if unknown:
            raise RunError(f"{len(unknown)} videos are not 'ok' in {manifest} ({', '.join(unknown[:3])}"
                           f"{', ...' if len(unknown) > 3 else ''})")
        store.check_streams(ids, self.streams)
        ids_sorted = sorted(ids, key=store.num_snippets)
        results: dict[str, dict] = {}
        for i in range(0, len(ids_sorted), batch_size):
            chunk = ids_sorted[i:i + batch_size]
            items = [self._item(store.load(v, self.streams), store.has_audio(v)) for v in chunk]
            results.update(zip(chunk, self._predict_items(items)))
        return {v: results[v] for v in ids}


def load_run(run_dir: str | Path, device: str | torch.device | None = None,
             allow_incomplete: bool = False) -> TrainedRun:
    """The run's configuration, classes, extraction settings, cluster assignments and model (eval mode)."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    if not ckpt_path.is_file():
        raise RunError(f"{run_dir}: no {CHECKPOINT}; is this a clipae-train run folder?")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    state = read_checkpoint(ckpt_path)
    if not state["complete"] and not allow_incomplete:
        raise RunError(f"{run_dir}: training is not complete (round {state['round']}, epoch {state['epoch']}); "
                       f"resume it with clipae-train")
    config = saved_run_config(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
    extraction = TrainedOn.load(run_dir)
    dims = dict(state["dims"])
    model = build_model(config, dims, len(state["classes"])).to(dev)
    model.load_state_dict(state["model"])
    model.eval()
    assignments: dict[str, int] = {}
    if config.train.mode == "unsupervised" and state["assignments"]:
        assignments = {v: int(c) for v, c in zip(state["video_ids"], state["assignments"][-1])}
    return TrainedRun(run_dir, config, list(state["classes"]), extraction, assignments, model, dev, dims)
