"""``clipae-train``: manifest + ground truth → a trained run folder.

    clipae-train --manifest M --annotations A --out RUN [--config thumos14|anet12|FILE]
                 [--mode unsupervised|weakly] [--rounds R] [--set key=value ...] [--quiet]

Unsupervised (default): R rounds of cluster the training videos into K groups → train on the
cluster ids as video labels → re-embed the videos with the model's attention. Weakly: one round on
the true video labels. Multi-GPU: ``torchrun --nproc_per_node=N -m clipae train ...``.

The run folder holds ``config.yaml`` (resolved), ``extraction.json`` (grid, stream settings and
weights of the training features), ``checkpoint.pt`` (rewritten atomically after every epoch: model
with feature statistics, optimizer, the round's weight average, memory bank, cluster ids and
centres), ``assignments.json``, ``metrics.csv`` (losses per epoch), ``rounds.csv`` (cluster sizes,
NMI / ARI, time per round) and ``train.log``. Running the same command again resumes from the checkpoint.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..core.dist import Ranks
from ..core.fsio import replace_atomic, write_json_atomic, write_text_atomic
from ..core.interrupt import Stopped, StopSignals, exit_on_sigterm
from ..core.weights import WeightsError, load_checkpoint
from ..datasets.annotations import load_ground_truth
from . import clustering
from .clipae import build_model
from .config import Config, ConfigError, TrainConfig, load_config, save_config, saved_run_config
from .data import (DataError, FeatureStore, TrainingSet, VideoDataset, collate, compute_feature_stats, epoch_order,
                   extraction_settings, foreground_mask, split_validation, training_set)
from .losses import CLIPAELoss
from .trained_on import FILE as TRAINED_ON, RunError

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


def read_checkpoint(path: Path) -> dict:
    """A run folder's ``checkpoint.pt``, read with ``weights_only=True``: tensors, numbers, strings,
    lists and dicts, so a crafted file runs no code. Cluster centres that checkpoints of earlier
    versions held as a NumPy array of numbers arrive as a tensor; anything else is refused."""
    try:
        return load_checkpoint(path, numpy_arrays=True)
    except WeightsError as e:
        raise RunError(f"{e}; refused, nothing in it was run") from None


def init_distributed() -> Ranks:
    """Joins the process group when started by ``torchrun`` (NCCL on GPUs, gloo on CPU)."""
    ranks = Ranks.from_env()
    if ranks.world_size > 1:
        ranks.start("auto", timeout=None)
    return ranks


def pick_device(name: str, d: Ranks) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device is {name!r} but CUDA is not available")
        return torch.device("cuda", d.local_rank) if d.world_size > 1 else torch.device(name)
    return torch.device(name)


def round_epochs(t: TrainConfig, rounds: int) -> list[int]:
    """Epochs of each of ``rounds`` rounds: ``train.epochs_per_round`` each, or, with
    ``train.final_round_share`` s, the same total ``rounds × epochs_per_round`` with s of it (rounded
    half up) in the last round and the rest shared by the earlier ones (each at least one epoch;
    what does not divide goes to the first rounds)."""
    total = rounds * t.epochs_per_round
    if rounds == 1 or t.final_round_share is None:
        return [t.epochs_per_round] * rounds
    last = min(total - (rounds - 1), max(1, int(t.final_round_share * total + 0.5)))
    each, extra = divmod(total - last, rounds - 1)
    return [each + (i < extra) for i in range(rounds - 1)] + [last]


def _epoch_key(r: int, e: int, schedule: list[int]) -> int:
    """A run-wide index of epoch ``e`` of round ``r`` (seeds the epoch's sampling and dropout)."""
    return sum(schedule[:r]) + e


class WeightAverage:
    """An exponential moving average of a model's weights over the steps of one round.

    With ``decay = 1 − 1 / (epochs × steps per epoch)`` it averages about the last ``epochs`` epochs;
    :meth:`apply` gives the model those averaged weights at the end of the round, so the model that
    embeds the videos for the next round's clusters, and the one that is saved, is the average.
    Integer buffers are copied, not averaged. ``state`` (a dict of tensors, or None before the
    round's first step) is part of the checkpoint, so a resumed round averages the same steps."""

    def __init__(self, epochs: float | None, steps_per_epoch: int):
        self.decay = None if epochs is None else 1.0 - 1.0 / max(1.0, epochs * steps_per_epoch)
        self.state: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        if self.decay is None:
            return
        current = model.state_dict()
        if self.state is None:
            self.state = {k: v.detach().clone() for k, v in current.items()}
            return
        for k, v in current.items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                self.state[k].copy_(v)

    def apply(self, model: torch.nn.Module) -> None:
        """The round ends: ``model`` takes the averaged weights and the average starts again."""
        if self.state is not None:
            model.load_state_dict(self.state)
        self.state = None


def _write_json_atomic(path: Path, obj) -> None:
    write_json_atomic(path, obj, indent=1, sort_keys=True)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class Trainer:
    """The round / epoch loop of one run (every rank runs one; rank 0 writes the run folder)."""

    #: set by :func:`main`: a SIGINT / SIGTERM raises :class:`Stopped` before the next batch
    #: (after the epoch with several ranks)
    stop: StopSignals | None = None

    def __init__(self, cfg: Config, out: Path, store: FeatureStore, tset: TrainingSet, dims: dict[str, int],
                 classes: list[str], d: Ranks, device: torch.device, quiet: bool, vset: TrainingSet | None = None):
        self.cfg, self.out, self.store, self.tset, self.dims = cfg, out, store, tset, dims
        self.vset = vset                     # held-out training videos (data.val_fraction), monitoring only
        self.classes, self.dist, self.device, self.quiet = classes, d, device, quiet
        self.k = len(classes)
        t = cfg.train
        if t.batch_size % d.world_size:
            raise ConfigError(f"train.batch_size {t.batch_size} is not divisible by the {d.world_size} processes")
        self.streams = cfg.required_streams()
        self.schedule = round_epochs(t, t.rounds if t.mode == "unsupervised" else 1)
        n = len(tset.video_ids)
        self.train_set = VideoDataset(store, tset.video_ids, self.streams, np.zeros((n, self.k), np.float32),
                                      cfg.data.num_segments, seed=t.seed)
        self.full_set = VideoDataset(store, tset.video_ids, self.streams)
        self.val_set = VideoDataset(store, vset.video_ids, self.streams) if vset is not None else None
        self.views = [list(cfg.data.streams.cbp)] + ([[cfg.data.streams.vlp]] if cfg.model.use_ccp else [])
        torch.manual_seed(t.seed)
        self.model = build_model(cfg, dims, self.k).to(device)
        self.loss = CLIPAELoss(cfg.loss, n, cfg.model.ccp_dim if cfg.model.use_ccp else None, seed=t.seed).to(device)
        self.net = self.model
        if d.world_size > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids, broadcast_buffers=False)
        self.optimizer = None
        self.average = WeightAverage(t.average_epochs, steps_per_epoch=math.ceil(n / t.batch_size))
        self.round, self.epoch, self.complete = 0, 0, False
        self.assignments: list[np.ndarray] = []
        self.centres = np.zeros((0, 0), np.float32)
        self.round_seconds = 0.0
        self.round_info: dict = {}
        self.history: dict[str, list] = {"epochs": [], "rounds": []}
        self.log_file = out / "train.log"

    # ---- bookkeeping -------------------------------------------------------------------------
    def log(self, msg: str, echo: bool = True) -> None:
        """A line of ``train.log`` (rank 0), also on stderr unless ``--quiet`` or not ``echo``."""
        if not self.dist.main:
            return
        with open(self.log_file, "a", encoding="utf-8") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")
        if echo and not self.quiet:
            tqdm.write(msg, file=sys.stderr)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        return torch.optim.Adam(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)

    def save(self) -> None:
        if self.dist.main:
            state = {
                "format": CHECKPOINT_FORMAT, "round": self.round, "epoch": self.epoch, "complete": self.complete,
                "model": self.model.state_dict(), "loss": self.loss.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
                "average": self.average.state,
                "assignments": [a.tolist() for a in self.assignments],
                "centres": torch.from_numpy(np.ascontiguousarray(self.centres, dtype=np.float32)),
                "round_seconds": self.round_seconds, "round_info": self.round_info, "history": self.history,
                "dims": self.dims, "classes": self.classes,
                "video_ids": self.tset.video_ids,
            }
            replace_atomic(self.out / CHECKPOINT, lambda f: torch.save(state, f))
            self._write_tables()
        if self.dist.world_size > 1:
            dist.barrier()

    def load(self, state: dict) -> None:
        if state["video_ids"] != self.tset.video_ids:
            raise RunError(f"{self.out}: the checkpoint was trained on other videos than this manifest and "
                           f"ground truth give; use a new --out")
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.round, self.epoch, self.complete = state["round"], state["epoch"], state["complete"]
        self.assignments = [np.asarray(a, dtype=np.int64) for a in state["assignments"]]
        self.centres = np.asarray(state["centres"], dtype=np.float32)
        self.round_seconds = state["round_seconds"]
        self.round_info, self.history = state["round_info"], state["history"]
        self.average.state = state.get("average")           # checkpoints of earlier versions: none
        if state["optimizer"] is not None:
            self.optimizer = self._new_optimizer()
            self.optimizer.load_state_dict(state["optimizer"])

    # ---- labels for a round ------------------------------------------------------------------
    def _full_batches(self, dataset: VideoDataset | None = None):
        dataset = self.full_set if dataset is None else dataset
        order = list(range(len(dataset)))
        order.sort(key=lambda i: self.store.num_snippets(dataset.video_ids[i]))  # less padding
        return DataLoader(dataset, batch_size=self.cfg.train.batch_size, sampler=order, collate_fn=collate,
                          num_workers=self.cfg.train.num_workers)

    def _cluster_round(self, r: int) -> None:
        """Pseudo labels of round ``r`` (unsupervised), identical on every rank."""
        t0 = time.time()
        c = self.cfg.cluster
        name = clustering.first_round_name(c.first_embedding, self.views)
        first = clustering.FIRST_ROUND.get(name) if r == 0 else None   # None: "mean", or r > 0
        if self.dist.main:
            self.model.eval()
            emb, order = clustering.embed_videos(self._full_batches(), self.views,
                                                 self.model if (r > 0 or first) else None, self.device,
                                                 c.embedding, first_round=first,
                                                 first_options={k: getattr(c, k) for k in first.options} if first else None)
            emb = emb[np.argsort(order)]
            if first is not None and not first.signed:     # e and −e are one video: cluster lines
                labels, emb = clustering.sign_invariant_kmeans(emb, self.k, self.cfg.train.seed + r, c.n_init)
            else:
                labels, _ = clustering.cluster(emb, self.k, c.method, self.cfg.train.seed + r, c.n_init)
            if self.assignments:
                labels = clustering.align_clusters(self.assignments[-1], labels, self.k)
            payload = [labels, clustering.centres_of(emb, labels, self.k)]
        else:
            payload = [None, None]
        if self.dist.world_size > 1:
            dist.broadcast_object_list(payload, src=0)
        labels, centres = payload
        moved = clustering.agreement(self.assignments[-1], labels) if self.assignments else {}
        self.assignments.append(labels)
        self.centres = centres
        sizes = np.bincount(labels, minlength=self.k)
        scores = clustering.cluster_scores(labels, self.tset.main_label)
        how = (f"{c.embedding} embedding" + (f" of label-free {name}" if first else "")
               if r > 0 or first else "mean-pooled raw features")
        if first is not None and not first.signed:
            how += ", sign-invariant k-means"
        change = (f"; {moved['changed']:.1%} of videos changed cluster (NMI to round {r - 1}: "
                  f"{moved['agreement_nmi']:.3f})") if moved else ""
        self.log(f"round {r}: clustered {len(labels)} videos into {self.k} ({c.method}, {how}) in "
                 f"{time.time() - t0:.1f}s; sizes {sizes.tolist()}{change}; NMI {scores['nmi']:.3f} "
                 f"ARI {scores['ari']:.3f} accuracy {scores['acc']:.3f} (monitoring only)")
        self.round_info = {"changed": round(moved["changed"], 4) if moved else "",
                           "agreement_nmi": round(moved["agreement_nmi"], 4) if moved else "",
                           "nmi": scores["nmi"], "ari": scores["ari"], "cluster_acc": scores["acc"],
                           "sizes": " ".join(map(str, sizes)), "cluster_s": round(time.time() - t0, 3)}

    @torch.no_grad()
    def _outputs(self, dataset: VideoDataset) -> dict[int, dict[str, np.ndarray]]:
        """``{position in dataset: {"attention": (T,), "video_scores": (K,)}}`` of the current model."""
        self.model.eval()
        out = {}
        for batch in self._full_batches(dataset):
            pred = self.model.predict({k: v.to(self.device) for k, v in batch.items()})
            for j, (i, n) in enumerate(zip(batch["index"].tolist(), batch["mask"].sum(1).tolist())):
                out[i] = {"attention": pred["attention"][j, :n].float().cpu().numpy(),
                          "video_scores": pred["video_scores"][j].float().cpu().numpy()}
        return out

    def _attention_ap(self, tset: TrainingSet, outputs: dict) -> float | str:
        """Snippet-level AP of the attention against the annotated segments (monitoring only)."""
        from sklearn.metrics import average_precision_score
        ys = [foreground_mask(tset.segments[i], self.store.records[v]) for i, v in enumerate(tset.video_ids)]
        y = np.concatenate(ys)
        if not tset.segments or not y.any() or y.all():
            return ""
        return round(float(average_precision_score(y, np.concatenate([outputs[i]["attention"]
                                                                         for i in range(len(ys))]))), 4)

    def _monitor(self) -> dict:
        """After a round: attention AP on the training videos and, with a validation split, the
        validation videos' attention AP and class accuracy of the model's video scores (Hungarian
        against each video's main class). Ground truth is read here and nowhere in training."""
        if not self.dist.main:
            return {}
        info = {"train_attention_ap": self._attention_ap(self.tset, self._outputs(self.full_set))}
        if self.val_set is not None:
            outputs = self._outputs(self.val_set)
            info["val_attention_ap"] = self._attention_ap(self.vset, outputs)
            pred = np.array([int(np.argmax(outputs[i]["video_scores"])) for i in range(len(self.vset.video_ids))])
            keep = self.vset.main_label >= 0
            info["val_acc"] = round(clustering.cluster_accuracy(pred[keep], self.vset.main_label[keep]), 4) \
                if keep.any() else ""
        parts = ", ".join(f"{k} {v}" for k, v in info.items() if v != "")
        if parts:
            self.log(f"round {self.round}: {parts} (monitoring only)")
        return info

    def _start_round(self, r: int) -> None:
        if self.cfg.train.mode == "unsupervised":
            self._cluster_round(r)
        else:
            self.assignments.append(np.full(len(self.tset.video_ids), -1, dtype=np.int64))
            self.round_info = {"changed": "", "agreement_nmi": "", "nmi": "", "ari": "", "cluster_acc": "",
                               "sizes": "", "cluster_s": 0.0}
        self.round, self.epoch, self.round_seconds = r, 0, float(self.round_info["cluster_s"])
        self.optimizer = self._new_optimizer()
        if self.dist.main:
            self._write_assignments()
        self.save()

    def _stable(self, r: int) -> bool:
        """``cluster.stop_below``: when round ``r``'s clusters moved less than that, the rounds end and
        the model stays the one trained on round ``r - 1``'s clusters (whose ids are kept)."""
        changed = self.round_info.get("changed")
        if r == 0 or changed == "" or changed >= self.cfg.cluster.stop_below:
            return False
        self.log(f"round {r}: only {changed:.1%} of videos changed cluster (< cluster.stop_below "
                 f"{self.cfg.cluster.stop_below}); stopping after round {r - 1}")
        self.assignments.pop()
        self.round, self.epoch = r - 1, self.schedule[r - 1]
        if self.dist.main:
            self._write_assignments()
        return True

    def _labels(self) -> np.ndarray:
        if self.cfg.train.mode == "weakly":
            return self.tset.labels
        return np.eye(self.k, dtype=np.float32)[self.assignments[-1]]

    def _write_assignments(self) -> None:
        if self.cfg.train.mode != "unsupervised":
            return
        a = self.assignments[-1]
        _write_json_atomic(self.out / "assignments.json",
                           {"round": len(self.assignments) - 1,
                            "assignments": {v: int(c) for v, c in zip(self.tset.video_ids, a)}})

    # ---- training ------------------------------------------------------------------------------
    def _gather(self, pooled: dict, index: torch.Tensor):
        if self.dist.world_size == 1:
            return pooled, index
        def cat(x):
            bufs = [torch.empty_like(x) for _ in range(self.dist.world_size)]
            dist.all_gather(bufs, x.contiguous())
            return torch.cat(bufs)
        return {k: cat(v) for k, v in pooled.items()}, cat(index)

    def _train_epoch(self, r: int, e: int) -> dict:
        t = self.cfg.train
        key = _epoch_key(r, e, self.schedule)
        torch.manual_seed(t.seed * 1_000_003 + key * 97 + self.dist.rank)     # dropout of this epoch
        self.train_set.set_epoch(key)
        self.train_set.labels = self._labels()
        order = epoch_order(len(self.train_set), t.seed, key, self.dist.rank, self.dist.world_size)
        loader = DataLoader(self.train_set, batch_size=t.batch_size // self.dist.world_size, sampler=order,
                            collate_fn=collate, num_workers=t.num_workers)
        self.net.train()
        self.loss.train()
        collab_on = (e if self.cfg.loss.collab_every_round else key) >= self._collab_warmup(r)
        sums: dict[str, float] = {}
        count = 0
        for batch in loader:
            if self.stop is not None and self.dist.world_size == 1:
                self.stop.check()  # safe: the checkpoint holds every finished epoch
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            out = self.net(batch)
            parts = self.loss(out, batch["labels"], batch["index"], collab_on)
            self._check_finite(parts["total"], r, e)
            self.optimizer.zero_grad(set_to_none=True)
            parts["total"].backward()
            self.optimizer.step()
            self.average.update(self.model)
            self.loss.update_bank(self._gather)
            b = batch["index"].shape[0]
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * b
            count += b
        return {k: v / count for k, v in sums.items()}

    def _collab_warmup(self, r: int) -> int:
        """Epochs of round ``r`` before the streams teach each other: ``loss.collab_warmup_epochs``
        is for a round of ``train.epochs_per_round`` epochs; when the warm-up restarts every round
        (``loss.collab_every_round``) it keeps that share of a round that ``train.final_round_share``
        made longer or shorter."""
        warmup = self.cfg.loss.collab_warmup_epochs
        if not self.cfg.loss.collab_every_round:
            return warmup
        return int(warmup * self.schedule[r] / self.cfg.train.epochs_per_round + 0.5)

    def _check_finite(self, loss: torch.Tensor, r: int, e: int) -> None:
        """Stop before a NaN or infinite loss reaches the weights (every rank stops together);
        the checkpoint of the last finished epoch stays as it was."""
        finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
        if self.dist.world_size > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not bool(finite.item()):
            raise RunError(f"round {r}, epoch {e}: the training loss became {float(loss.detach())}; "
                           "lower train.lr or check the features")

    def _check_stop(self) -> None:
        """Raise :class:`Stopped` if a signal asked for it, on every rank alike (ranks agree first,
        so none is left waiting in a collective; with several ranks this is the only safe point)."""
        if self.stop is None:
            return
        signum = self.stop.signum or 0
        if self.dist.world_size > 1:
            flag = torch.tensor([signum], device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag.item())
        if signum:
            raise Stopped(signum)

    def after_epoch(self, r: int, e: int) -> None:
        """Called once an epoch's checkpoint is on disk (a hook for tests and tooling)."""

    def _write_tables(self) -> None:
        """``metrics.csv`` and ``rounds.csv`` rewritten from the checkpointed history (never torn or doubled)."""
        for name, rows in (("metrics.csv", self.history["epochs"]), ("rounds.csv", self.history["rounds"])):
            if not rows:
                continue
            text = io.StringIO(newline="")
            w = csv.DictWriter(text, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
            write_text_atomic(self.out / name, text.getvalue())

    def run(self) -> None:
        rounds = len(self.schedule)
        if self.complete:
            self.log(f"{self.out}: training already complete")
            return
        resumed = self.optimizer is not None
        if resumed:
            self.log(f"resuming at round {self.round}, epoch {self.epoch}")
        show = not (self.quiet or not sys.stderr.isatty() or not self.dist.main)
        for r in range(self.round, rounds):
            if not (resumed and r == self.round):
                self._start_round(r)
                if self._stable(r):
                    break
            resumed = False
            bar = tqdm(range(self.epoch, self.schedule[r]), desc=f"round {r}", disable=not show, leave=False)
            for e in bar:
                t0 = time.time()
                metrics = self._train_epoch(r, e)
                seconds = time.time() - t0
                self.epoch, self.round_seconds = e + 1, self.round_seconds + seconds
                self.history["epochs"].append({"round": r, "epoch": e, **{
                    k: round(metrics.get(k, 0.0), 6) for k in ("total", "mil", "collab", "sparsity", "decor", "insdis")},
                    "seconds": round(seconds, 3)})
                self.log(f"round {r} epoch {e}: " + " ".join(f"{k} {v:.4f}" for k, v in self.history["epochs"][-1].items()
                                                            if k not in ("round", "epoch", "seconds"))
                         + f" ({seconds:.1f}s)", echo=False)
                if e + 1 == self.schedule[r]:
                    self.average.apply(self.model)
                    self.history["rounds"].append({"round": r, **self.round_info, **self._monitor(),
                                                   "round_s": round(self.round_seconds, 3)})
                    self.log(f"round {r}: {self.schedule[r]} epochs in {self.round_seconds:.1f}s; "
                             f"loss {self.history['epochs'][-1]['total']:.4f}")
                self.save()
                bar.set_postfix(loss=f"{metrics['total']:.4f}")
                self.after_epoch(r, e)
                self._check_stop()
        self.complete = True
        self.save()
        self.log(f"training complete: {self.out}")


#: command-line switches that set one config field: flag → (section.field, value, why)
SWITCHES = {
    "--no-caf": ("model.use_caf", False, "no audio needed"),
    "--no-ccp": ("model.use_ccp", False, "no clip needed"),
    "--no-ssl": ("loss.use_ssl", False, "no Eq. 7-9"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipae-train", description="Train CLIP-AE (or the UGCT baseline) from a manifest.")
    p.add_argument("--manifest", required=True, help="manifest.jsonl written by clipae-extract")
    p.add_argument("--annotations", required=True, help="ground truth (any format load_ground_truth reads)")
    p.add_argument("--out", required=True, help="run folder (created; an existing run resumes)")
    p.add_argument("--config", help="bundled config name (thumos14, anet12) or YAML file")
    p.add_argument("--mode", choices=["unsupervised", "weakly"], help="sets train.mode")
    p.add_argument("--rounds", type=int, help="sets train.rounds")
    for flag, (key, value, why) in SWITCHES.items():
        p.add_argument(flag, action="store_true", help=f"sets {key}={str(value).lower()} ({why})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--plot", action="store_true",
                   help="draw rounds.csv / metrics.csv into RUN/training.png when training ends")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--class-names", metavar="NAMES",
                   help="after training, name each cluster by CLIP text (a .txt of names, or a ground truth): "
                        "RUN/cluster_names.json, used by clipae-eval --mapping clip-text and clipae-localize")
    p.add_argument("--weights-dir", help="checkpoints folder of the clip stream's CLIP (for --class-names)")
    p.add_argument("--random-weights", action="store_true",
                   help="random text tower for --class-names, for clip features made with --random-weights")
    return p


def resolve_config(args: argparse.Namespace) -> tuple[Config, bool]:
    """The configuration asked for on the command line, and whether anything was asked at all."""
    extra: dict = {}
    if args.mode:
        extra.setdefault("train", {})["mode"] = args.mode
    if args.rounds is not None:
        extra.setdefault("train", {})["rounds"] = args.rounds
    for flag, (key, value, _) in SWITCHES.items():
        if getattr(args, flag.removeprefix("--").replace("-", "_")):
            section, name = key.split(".")
            extra.setdefault(section, {})[name] = value
    asked = bool(args.config or extra or args.set)
    return load_config(args.config, args.set, extra), asked


def prepare(args: argparse.Namespace, d: Ranks) -> Trainer:
    """Reads and checks every input, writes the run's config and extraction settings, builds the trainer."""
    cfg, asked = resolve_config(args)
    out = Path(args.out)
    ckpt = out / CHECKPOINT
    gt = load_ground_truth(args.annotations)
    if cfg.cluster.num_clusters is None:
        cfg.cluster.num_clusters = len(gt.classes)
    if ckpt.exists():
        saved = saved_run_config(yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")))
        if asked:
            diff = sorted(k for k, v in _flat(cfg.to_dict()).items() if _flat(saved.to_dict()).get(k) != v)
            if diff:
                raise RunError(f"{out} holds a run with a different config ({', '.join(diff)}); "
                               f"resume it without options or choose a new --out")
        cfg = saved
    store = FeatureStore.open(args.manifest)
    tset, vset = split_validation(training_set(store, gt, cfg.data.train_subset, cfg.data.skip_missing),
                                  cfg.data.val_fraction, cfg.train.seed)
    streams = cfg.required_streams()
    dims = store.check_streams(tset.video_ids + (vset.video_ids if vset else []), streams)
    if cfg.train.mode == "weakly":
        classes = list(gt.classes)
    else:
        classes = [str(i) for i in range(cfg.cluster.num_clusters)]
        if len(tset.video_ids) < len(classes):
            raise DataError(f"{len(tset.video_ids)} training videos cannot form {len(classes)} clusters")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device, d)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        if not ckpt.exists():
            save_config(cfg, out / "config.yaml")
            # with where the training data came from: clipae-eval --run reads them when not given
            trained_on = dataclasses.replace(extraction_settings(store, tset.video_ids, streams),
                                             manifest=str(Path(args.manifest).resolve()),
                                             annotations=str(Path(args.annotations).resolve()))
            _write_json_atomic(out / TRAINED_ON, trained_on.to_json())
            if vset is not None:
                _write_json_atomic(out / "validation.json", {"video_ids": vset.video_ids})
    if d.world_size > 1:
        dist.barrier()
    trainer = Trainer(cfg, out, store, tset, dims, classes, d, device, args.quiet, vset)
    if vset is not None:
        trainer.log(f"holding out {len(vset.video_ids)} of the training videos for validation (data.val_fraction "
                    f"{cfg.data.val_fraction}): never trained or clustered on")
    if tset.missing:
        trainer.log(f"WARNING: {len(tset.missing)} videos of subset {cfg.data.train_subset!r} have no features "
                    f"and are skipped (data.skip_missing)")
    if ckpt.exists():
        trainer.load(read_checkpoint(ckpt))
    else:
        audio = cfg.data.streams.audio if cfg.model.use_caf else None
        trainer.model.norm.set_stats(compute_feature_stats(store, tset.video_ids, streams, audio))
        trainer.log(f"training {cfg.train.mode} on {len(tset.video_ids)} videos of {cfg.data.train_subset!r}, "
                    f"K={len(classes)}, streams {', '.join(streams)}, device {device}, {d.world_size} process(es)")
    return trainer


def stopped_summary(trainer: Trainer | None, stopped: Stopped) -> str:
    """What a stopped run has done, in one line."""
    if trainer is None:
        return f"clipae-train: stopped by {stopped.signal_name} before training started"
    epochs = trainer.history["epochs"]
    done = f"{len(epochs)} epochs done, last loss {epochs[-1]['total']:.4f}" if epochs else "no epoch done"
    return (f"clipae-train: stopped by {stopped.signal_name} in round {trainer.round}, epoch {trainer.epoch} "
            f"({done}); {trainer.out / CHECKPOINT} holds every finished epoch: run the same command again to resume")


def main(argv: list[str] | None = None, name_clusters: Callable[..., str] | None = None) -> int:
    """``clipae-train``. ``name_clusters(run, manifest, class_names, weights_dir, random_weights) -> str``
    is the ``--class-names`` step (:func:`clipae.eval.naming.name_after_training`, given by
    :mod:`clipae.cli`): naming clusters with CLIP text is evaluation's work, above the model."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.class_names and name_clusters is None:
        raise RunError("--class-names is the clipae-train command's (python -m clipae train)")
    exit_on_sigterm()
    d = init_distributed()
    trainer = None
    try:
        with StopSignals("clipae-train") as stop:
            trainer = prepare(args, d)
            trainer.stop = stop
            stop.check()
            trainer.run()
        if args.plot and d.main:
            from .plot import plot_run
            trainer.log(f"diagnostics drawn: {plot_run(trainer.out)}")
        if args.class_names and d.main:
            print(name_clusters(args.out, args.manifest, args.class_names, args.weights_dir, args.random_weights))
    except Stopped as e:
        print(stopped_summary(trainer, e), file=sys.stderr, flush=True)
        return e.exit_status
    finally:
        if d.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0

