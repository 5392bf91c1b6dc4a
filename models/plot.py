"""``clipae-train --plot``: a run's diagnostics over rounds and epochs as one picture.

Reads ``rounds.csv`` and ``metrics.csv`` of a run folder and writes ``training.png`` beside them:

- left: per round, the fraction of videos whose cluster changed, cluster accuracy and NMI against
  the ground truth, and the attention AP on the training (and held-out validation) videos;
- right: per epoch, every loss term (one line each), with the round boundaries marked.

Ground-truth columns are monitoring only; they are drawn when the run has them.
"""
from __future__ import annotations

import csv
from pathlib import Path

ROUND_COLUMNS = ("changed", "cluster_acc", "nmi", "train_attention_ap", "val_attention_ap", "val_acc")
LOSS_COLUMNS = ("total", "mil", "collab", "sparsity", "decor", "insdis")


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _series(rows: list[dict], column: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for i, r in enumerate(rows):
        value = r.get(column)
        if value not in (None, ""):
            xs.append(i)
            ys.append(float(value))
    return xs, ys


def plot_run(run_dir: str | Path) -> Path:
    """Writes ``<run_dir>/training.png`` and returns its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rounds, epochs = _rows(run_dir / "rounds.csv"), _rows(run_dir / "metrics.csv")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for column in ROUND_COLUMNS:
        xs, ys = _series(rounds, column)
        if ys:
            left.plot([int(rounds[i]["round"]) for i in xs], ys, marker="o", label=column)
    left.set_xlabel("round")
    left.set_ylim(-0.02, 1.02)
    left.set_title("clusters and attention (ground truth: monitoring only)")
    left.legend(fontsize=7)
    for column in LOSS_COLUMNS:
        xs, ys = _series(epochs, column)
        if ys and any(ys):
            right.plot(xs, ys, label=column)
    for i in range(1, len(epochs)):
        if epochs[i]["round"] != epochs[i - 1]["round"]:
            right.axvline(i - 0.5, color="grey", lw=0.5, ls="--")
    right.set_xlabel("epoch (all rounds)")
    right.set_title("loss terms")
    right.legend(fontsize=7)
    fig.tight_layout()
    out = run_dir / "training.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
