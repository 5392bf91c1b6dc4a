"""``clipae-bench utal``: does unsupervised localisation learn on data it was not built with?

    clipae-bench utal [--size reduced|full] [--families a,b,...] [--variants a,b,...] [--seeds 0,1,2]
                      [--split test|validation] [--jobs N] [--workdir DIR] [--json FILE]

For every *family* of synthetic data (:data:`FAMILIES`: each moves one difficulty axis of
:class:`~clipae.models.synthetic.SyntheticSpec` away from ``base``) and every seed (the seed draws
the data *and* the training), this trains each *variant* (:data:`VARIANTS`: the UGCT baseline,
+CAF, +CCP, full CLIP-AE, CLIP-AE without Eq. 7-9, and the weakly-supervised upper bound trained
for the same total number of epochs) with ``clipae-train`` in its own process, scores it with the
project's evaluator (ActivityNet protocol, tIoU 0.1:0.7) and adds two non-learned baselines scored
the same way:

- ``kmeans+norm``: k-means clusters of mean-pooled features (the unsupervised round 0) and
  segments from thresholding a per-snippet actionness, the distance of a snippet's standardised
  CBP features from its video's mean;
- ``oracle+norm``: the same actionness with each video's true class (an oracle classifier).

It prints one table per family: cluster accuracy per round (Hungarian against each training
video's main class), NMI of the last round, the fraction of clusters whose label-free name
(``clipae-train --class-names``, with a synthetic text tower: a class's text is its VLP direction)
is the ground-truth mapping's class, mAP@0.1..0.7 and their mean, each as mean ± std over
the seeds, and the wall time; then a summary across families. ``--split validation`` holds out a
fifth of the training videos (``data.val_fraction``) and scores them instead of the test subset:
that is the split on which settings are chosen, never the test subset.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core.grid import SnippetGrid
from ..datasets.annotations import GroundTruth, load_ground_truth
from ..eval.detection import evaluate
from ..eval.mapping import build_mapping
from ..eval.predict import predict_results, to_entries
from ..eval.proposals import ProposalConfig, generate_proposals, minmax
from ..eval.results import build_inputs
from ..models.clustering import cluster, cluster_accuracy
from ..models.synthetic import SyntheticSpec, SyntheticTextTower, generate
from ..pipeline.manifest import load_stream, read_manifest

TIOUS = np.round(np.arange(0.1, 0.75, 0.1), 2)
SMALL_DIMS = {"i3d_rgb": 64, "i3d_flow": 64, "clip": 32, "vggish": 16}

#: family name -> how it differs from ``base`` (fields of SyntheticSpec)
FAMILIES: dict[str, dict] = {
    "base": {},
    "scene-strong": {"scene_corr": 0.8, "scene": 1.0},       # backgrounds tell the class (and mislead)
    "scene-free": {"scene_corr": 0.0, "scene": 0.3},
    "short": {"instance_len": (0.015, 0.04), "instances": (4, 8)},
    "long": {"instance_len": (0.15, 0.3), "instances": (1, 2)},
    "classes": {"classes": 12},
    "silent": {"no_audio": 0.7, "audio_strength": 0.5},
    "weak-vlp": {"vlp_strength": 0.6},
}

#: variant name -> clipae-train arguments
VARIANTS: dict[str, list[str]] = {
    "ugct": ["--no-caf", "--no-ccp"],
    "+caf": ["--no-ccp"],
    "+ccp": ["--no-caf"],
    "clip-ae": [],
    "clip-ae-dist0": ["--set", "cluster.first_embedding=actionness"],   # round 0 from the distance actionness
    "clip-ae-mean0": ["--set", "cluster.first_embedding=mean"],   # round 0 from mean-pooled raw features
    "no-ssl": ["--no-ssl"],
    "weakly": ["--mode", "weakly"],
}
DEFAULT_VARIANTS = list(VARIANTS)
BASELINES = ("kmeans+norm", "oracle+norm")


@dataclass(frozen=True)
class Size:
    """Data and training budget of one size of the benchmark."""
    base: SyntheticSpec
    videos_per_class: int                 # training videos per class (the test subset has 3/4 of that)
    rounds: int
    epochs: int
    overrides: tuple[str, ...] = ()
    families: tuple[str, ...] = tuple(FAMILIES)


SIZES = {
    # 2 CPU cores: small dims and model, 6 classes, ~100 snippets per video
    "reduced": Size(SyntheticSpec(classes=6, snippets=100, instances=(2, 4), instance_len=(0.04, 0.12),
                                  distractors=(1, 2), no_audio=0.2, scene=0.6, scene_corr=0.5, dims=SMALL_DIMS),
                    videos_per_class=8, rounds=4, epochs=10,
                    overrides=("data.num_segments=100", "model.hidden_dim=64", "model.attention_dim=32",
                               "model.caf_dim=32", "model.ccp_dim=32", "model.dropout=0.5", "train.lr=1e-3",
                               "train.batch_size=8", "train.threads=1", "cluster.n_init=4",
                               "loss.collab_warmup_epochs=3"),
                    families=("base", "scene-strong", "short", "long", "silent", "weak-vlp")),
    # for the tests: seconds on a CPU
    "smoke": Size(SyntheticSpec(classes=3, snippets=48, instances=(2, 3), instance_len=(0.06, 0.15),
                                distractors=(1, 1), no_audio=0.2, scene=0.6, scene_corr=0.5,
                                dims={"i3d_rgb": 16, "i3d_flow": 16, "clip": 16, "vggish": 8}),
                  videos_per_class=6, rounds=2, epochs=3,
                  overrides=("data.num_segments=48", "model.hidden_dim=16", "model.attention_dim=8",
                             "model.caf_dim=8", "model.ccp_dim=8", "model.dropout=0.3", "train.lr=1e-3",
                             "train.batch_size=6", "train.threads=1", "cluster.n_init=2"),
                  families=("base",)),
    # THUMOS-sized features and the thumos14 configuration (a GPU)
    "full": Size(SyntheticSpec(classes=20, snippets=750, no_audio=0.2, scene=0.6, scene_corr=0.5),
                 videos_per_class=10, rounds=5, epochs=60),
}


def family_spec(size: Size, family: str, seed: int) -> SyntheticSpec:
    spec = replace(size.base, **FAMILIES[family])
    n = spec.classes * size.videos_per_class
    return replace(spec, train=n, test=max(spec.classes, n * 3 // 4), seed=1000 * seed + sorted(FAMILIES).index(family))


def schedule(size: Size) -> list[int]:
    """Epochs of each unsupervised round at this size (``train.final_round_share`` of the config)."""
    from ..models.config import load_config
    from ..models.train import round_epochs
    cfg = load_config(None, [*size.overrides, f"train.epochs_per_round={size.epochs}"])
    return round_epochs(cfg.train, size.rounds)


def train_argv(variant: str, size: Size, paths: dict, out: Path, seed: int, split: str) -> list[str]:
    rounds, epochs = (1, size.rounds * size.epochs) if variant == "weakly" else (size.rounds, size.epochs)
    argv = [sys.executable, "-m", "clipae", "train", "--manifest", str(paths["manifest"]),
            "--annotations", str(paths["ground_truth"]), "--out", str(out), "--quiet", *VARIANTS[variant],
            "--rounds", str(rounds), "--set", f"train.epochs_per_round={epochs}", "--set", f"train.seed={seed}"]
    if split == "validation":
        argv += ["--set", "data.val_fraction=0.2"]
    for o in size.overrides:
        argv += ["--set", o]
    return argv


def scoring_subset(gt: GroundTruth, run_dir: Path, split: str) -> tuple[GroundTruth, str]:
    """The ground truth to score against: the test subset, or the run's held-out training videos."""
    if split == "test":
        return gt, "test"
    held = set(json.loads((run_dir / "validation.json").read_text(encoding="utf-8"))["video_ids"])
    db = {v: {**r, "subset": "heldout"} for v, r in gt.database.items() if v in held}
    return replace(gt, database={**gt.database, **db}), "heldout"


def map_scores(gt: GroundTruth, subset: str, results: dict) -> np.ndarray:
    """mAP ``(len(TIOUS),)`` of a results dict, ActivityNet protocol."""
    return evaluate(build_inputs(gt, subset, results, "error"), TIOUS).mean(axis=1)


def rounds_table(run_dir: Path) -> list[dict]:
    with open(run_dir / "rounds.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def names_agreement(run, paths: dict, spec: SyntheticSpec, gt: GroundTruth) -> float | None:
    """Fraction of clusters whose label-free ``clip-text`` name (:mod:`clipae.eval.naming`, with the
    synthetic text tower) is the class the ground-truth Hungarian mapping gives them."""
    if not run.train_assignments or "clip" not in run.streams:
        return None
    from ..eval.naming import name_clusters, pooled_video_features
    tower = SyntheticTextTower(spec)
    named = name_clusters(run.train_assignments, pooled_video_features(run, paths["manifest"]), len(run.classes),
                          list(gt.classes), tower.embed(list(gt.classes)))
    labels = gt.video_labels()
    truth = build_mapping(dict(run.train_assignments), {v: labels[v] for v in run.train_assignments},
                          len(run.classes), list(gt.classes))
    return float(np.mean([a == b for a, b in zip(named.cluster_to_class, truth.cluster_to_class)]))


def run_variant(variant: str, size: Size, paths: dict, root: Path, seed: int, split: str, timeout_s: float,
                spec: SyntheticSpec) -> dict:
    out = root / f"run-{variant}"
    t0 = time.time()
    proc = subprocess.run(train_argv(variant, size, paths, out, seed, split), capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.time() - t0
    if proc.returncode:
        raise RuntimeError(f"{variant}: clipae-train exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    from ..models.run import load_run
    gt = load_ground_truth(paths["ground_truth"])
    gt_eval, subset = scoring_subset(gt, out, split)
    run = load_run(out, device="cpu")
    results, _ = predict_results(run, paths["manifest"], gt_eval, subset, out, quiet=True)
    rows = rounds_table(out)
    acc = [float(r["cluster_acc"]) for r in rows if r.get("cluster_acc") not in (None, "")]
    nmi = [float(r["nmi"]) for r in rows if r.get("nmi") not in (None, "")]
    return {"mAP": map_scores(gt_eval, subset, results).tolist(), "acc_rounds": acc,
            "nmi": nmi[-1] if nmi else None, "names": names_agreement(run, paths, spec, gt), "seconds": seconds}


def actionness(features: dict[str, np.ndarray], streams: list[str], stats: dict) -> np.ndarray:
    """``(T,)`` distance of each snippet's standardised CBP features from the video's mean."""
    x = np.concatenate([(features[s] - stats[s][0]) / stats[s][1] for s in streams], axis=1)
    return np.linalg.norm(x - x.mean(0, keepdims=True), axis=1)


def baseline_results(paths: dict, seed: int, cbp: list[str], train_ids: list[str],
                     eval_ids: list[str]) -> tuple[dict[str, dict], float]:
    """Results-schema predictions ``{row: {video: [entry, ...]}}`` of the two non-learned rows for
    ``eval_ids`` (the clusters come from ``train_ids``), and the k-means clusters' accuracy on
    ``train_ids``. Same proposals code as the runs (:func:`generate_proposals`, default settings)."""
    gt = load_ground_truth(paths["ground_truth"])
    records = read_manifest(paths["manifest"])
    feats = {v: {s: np.asarray(load_stream(paths["manifest"], records[v], s), dtype=np.float64) for s in cbp}
             for v in train_ids + eval_ids}
    stacked = {s: np.concatenate([feats[v][s] for v in train_ids]) for s in cbp}
    stats = {s: (a.mean(0), a.std(0) + 1e-6) for s, a in stacked.items()}

    def embed(v):                    # round 0 of the unsupervised protocol: L2-normalised view means
        return np.concatenate([feats[v][s].mean(0) / np.linalg.norm(feats[v][s].mean(0)) for s in cbp])

    labels_gt, classes = gt.video_labels(), list(gt.classes)
    k = len(classes)
    assign, centres = cluster(np.stack([embed(v) for v in train_ids]), k, "kmeans", seed, n_init=4)
    mapping = build_mapping(dict(zip(train_ids, assign.tolist())), {v: labels_gt[v] for v in train_ids}, k, classes)
    truth = np.array([classes.index(labels_gt[v][0]) for v in train_ids])
    cfg = ProposalConfig()
    out: dict[str, dict] = {}
    for name in BASELINES:
        results = {}
        for v in eval_ids:
            a = minmax(actionness(feats[v], cbp, stats))
            if name == "kmeans+norm":
                col, labels = int(np.argmin(((centres - embed(v)) ** 2).sum(1))), mapping.cluster_to_class
            else:
                col, labels = classes.index(labels_gt[v][0]), classes
            cas = np.zeros((len(a), k))
            cas[:, col] = a
            props = generate_proposals(cas, a, np.eye(k)[col], SnippetGrid.from_record(records[v]),
                                       records[v].get("duration_s"), cfg)
            results[v] = to_entries(props, labels, keep_cluster=False)
        out[name] = results
    return out, cluster_accuracy(assign, truth)


def run_baselines(paths: dict, root: Path, seed: int, split: str, cbp: list[str]) -> dict[str, dict]:
    """The two non-learned rows, scored like the runs."""
    t0 = time.time()
    gt = load_ground_truth(paths["ground_truth"])
    train_ids = sorted(gt.subset("validation").database)
    gt_eval, subset = scoring_subset(gt, root / "run-clip-ae", split)
    eval_ids = sorted(gt_eval.subset(subset).database)
    train_ids = [v for v in train_ids if v not in set(eval_ids)]
    results, acc = baseline_results(paths, seed, cbp, train_ids, eval_ids)
    out = {name: {"mAP": map_scores(gt_eval, subset, r).tolist(), "seconds": time.time() - t0}
           for name, r in results.items()}
    out["kmeans+norm"]["acc_rounds"] = [acc]
    return out


@dataclass
class Cell:
    """One (family, row) of the table: values over seeds."""
    mAP: list[list[float]] = field(default_factory=list)
    acc_rounds: list[list[float]] = field(default_factory=list)
    nmi: list[float] = field(default_factory=list)
    names: list[float] = field(default_factory=list)     # clip-text names that equal the ground-truth mapping
    seconds: list[float] = field(default_factory=list)


def _pm(values, scale=1.0, digits=1) -> str:
    if len(values) == 0:
        return "-"
    a = np.asarray(values, dtype=np.float64) * scale
    return f"{a.mean():.{digits}f}±{a.std():.{digits}f}"


def print_table(family: str, cells: dict[str, Cell], seeds: list[int], split: str) -> None:
    print(f"\nfamily {family} ({FAMILIES[family] or 'base settings'}), seeds {seeds}, scored on {split}")
    head = ["row", "acc r0", "acc last", "NMI", "names"] + [f"mAP@{t:g}" for t in TIOUS] + ["mean", "s"]
    print(f"{head[0]:>13}  " + "  ".join(f"{h:>12}" for h in head[1:]))
    for name, c in cells.items():
        m = np.asarray(c.mAP)
        row = [name,
               _pm([a[0] for a in c.acc_rounds], digits=3) if c.acc_rounds else "-",
               _pm([a[-1] for a in c.acc_rounds], digits=3) if c.acc_rounds else "-",
               _pm(c.nmi, digits=3), _pm(c.names, digits=2)]
        row += [_pm(m[:, i], 100) for i in range(len(TIOUS))] + [_pm(m.mean(1), 100), f"{np.mean(c.seconds):.0f}"]
        print(f"{row[0]:>13}  " + "  ".join(f"{x:>12}" for x in row[1:]))
    per_round = {n: per_round_accuracy(c) for n, c in cells.items() if c.acc_rounds and len(c.acc_rounds[0]) > 1}
    if per_round:
        print("cluster accuracy per round (mean over seeds): "
              + "; ".join(f"{n} {' → '.join(f'{a:.3f}' for a in accs)}" for n, accs in per_round.items()))
    sys.stdout.flush()


def per_round_accuracy(c: "Cell") -> list[float]:
    """Mean over seeds of each round's cluster accuracy (runs that stopped early are cut to the shortest)."""
    n = min(len(a) for a in c.acc_rounds)
    return [float(np.mean([a[r] for a in c.acc_rounds])) for r in range(n)]


def summary(table: dict[str, dict[str, Cell]]) -> list[str]:
    """The claims the benchmark checks, one line each."""
    lines = []
    for row in ("clip-ae", "clip-ae-dist0", "clip-ae-mean0"):     # the full model with each round 0
        gains, lows = [], []
        for fam, cells in table.items():
            c = cells.get(row)
            if c is None or not c.acc_rounds:
                continue
            r0 = np.mean([a[0] for a in c.acc_rounds])
            last = np.mean([a[-1] for a in c.acc_rounds])
            if r0 < 0.9:
                gains.append(last - r0)
                lows.append(fam)
        if gains:
            lines.append(f"{row} cluster accuracy, last round minus round 0, over families with round 0 < 0.9 "
                         f"({', '.join(lows)}): {np.mean(gains):+.3f}")
    for fam, cells in table.items():
        mean = {n: float(np.mean(np.asarray(c.mAP).mean(1))) for n, c in cells.items() if c.mAP}
        if "clip-ae" not in mean:
            continue
        parts = [f"clip-ae {100 * mean['clip-ae']:.1f}"]
        if "weakly" in mean and mean["weakly"] > 0:
            parts.append(f"{100 * mean['clip-ae'] / mean['weakly']:.0f}% of weakly {100 * mean['weakly']:.1f}")
        for b in BASELINES:
            if b in mean:
                parts.append(f"{'>' if mean['clip-ae'] > mean[b] else '<='} {b} {100 * mean[b]:.1f}")
        for v in ("ugct", "+caf", "+ccp", "no-ssl", "clip-ae-dist0", "clip-ae-mean0"):
            if v in mean:
                parts.append(f"{v} {100 * mean[v]:.1f}")
        lines.append(f"{fam}: mean mAP " + ", ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clipae-bench utal", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=list(SIZES), default="reduced")
    p.add_argument("--families", help=f"comma-separated, of: {', '.join(FAMILIES)} (default: the size's)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help="comma-separated, of: " + ", ".join(VARIANTS) + " (default: all)")
    p.add_argument("--no-baselines", action="store_true", help="leave out the two non-learned rows")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (data and training)")
    p.add_argument("--split", choices=["test", "validation"], default="test",
                   help="score the test subset, or held-out training videos (where settings are chosen)")
    p.add_argument("--jobs", type=int, default=2, help="trainings run side by side (one thread each)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds one training may take")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra clipae-train config override for every variant")
    p.add_argument("--workdir", help="keep data and runs here (default: a temporary folder, removed)")
    p.add_argument("--json", help="write every number to this file")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    size = SIZES[a.size]
    if a.set:
        size = replace(size, overrides=size.overrides + tuple(a.set))
    families = a.families.split(",") if a.families else list(size.families)
    variants = a.variants.split(",")
    bad = [f for f in families if f not in FAMILIES] + [v for v in variants if v not in VARIANTS]
    if bad:
        print(f"clipae-bench utal: unknown family or variant: {', '.join(bad)}", file=sys.stderr)
        return 2
    if a.split == "validation" and "clip-ae" not in variants and not a.no_baselines:
        print("clipae-bench utal: --split validation scores the baselines on the clip-ae run's held-out "
              "videos: keep the clip-ae variant or pass --no-baselines", file=sys.stderr)
        return 2
    seeds = [int(s) for s in a.seeds.split(",")]
    print(f"clipae-bench utal: size {a.size}, families {', '.join(families)}, variants {', '.join(variants)}, "
          f"seeds {seeds}, {size.rounds} rounds of {'/'.join(map(str, schedule(size)))} epochs "
          f"(weakly: 1 x {size.rounds * size.epochs})")
    t_all = time.time()
    table: dict[str, dict[str, Cell]] = {}
    if a.workdir:
        Path(a.workdir).mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(a.workdir) if a.workdir else tempfile.TemporaryDirectory()) as tmp:
        root = Path(tmp)
        for fam in families:
            cells = {n: Cell() for n in (*variants, *([] if a.no_baselines else BASELINES))}
            for seed in seeds:
                spec = family_spec(size, fam, seed)
                froot = root / fam / f"seed{seed}"
                paths = generate(froot / "data", spec)
                with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
                    futures = {v: pool.submit(run_variant, v, size, paths, froot, seed, a.split, a.timeout, spec)
                               for v in variants}
                    results = {v: f.result() for v, f in futures.items()}
                if not a.no_baselines:
                    results.update(run_baselines(paths, froot, seed, a.split, list(spec.dims)[:2]))
                for name, r in results.items():
                    c = cells[name]
                    c.mAP.append(r["mAP"])
                    c.seconds.append(r["seconds"])
                    if r.get("acc_rounds"):
                        c.acc_rounds.append(r["acc_rounds"])
                    if r.get("nmi") is not None:
                        c.nmi.append(r["nmi"])
                    if r.get("names") is not None:
                        c.names.append(r["names"])
            table[fam] = cells
            print_table(fam, cells, seeds, a.split)
    print("\nsummary")
    for line in summary(table):
        print("  " + line)
    print(f"total wall time {time.time() - t_all:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({f: {n: c.__dict__ for n, c in cells.items()} for f, cells in table.items()},
                                           indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
