"""A tiny training run on synthetic features, for tests that need a real run folder."""
from __future__ import annotations

from pathlib import Path

from clipae.cli import train_main
from clipae.models.synthetic import SyntheticSpec, generate

#: a model small enough to train in seconds on one CPU thread
TINY = ["data.num_segments=32", "model.hidden_dim=16", "model.attention_dim=8", "model.caf_dim=8",
        "model.ccp_dim=8", "train.batch_size=4", "train.threads=1", "train.epochs_per_round=3"]
DIMS = {"i3d_rgb": 8, "i3d_flow": 8, "clip": 8, "vggish": 4}


def train_tiny(root: Path, spec: SyntheticSpec, *args: str, settings: list[str] = TINY) -> tuple[Path, list[str]]:
    """``clipae-train`` on ``spec``'s features under ``root``; returns the run folder and its argv."""
    data = generate(root / "data", spec)
    argv = ["--manifest", str(data["manifest"]), "--annotations", str(data["ground_truth"]),
            "--out", str(root / "run"), "--quiet", *args]
    for o in settings:
        argv += ["--set", o]
    assert train_main(argv) == 0
    return root / "run", argv
