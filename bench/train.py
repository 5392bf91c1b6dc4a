"""``clipae-bench train``: one unsupervised training on THUMOS-scale synthetic features, timed.

    clipae-bench train [--size reduced|full] [--videos 200] [--snippets 750] [--rounds R] [--epochs E]

Writes ``--videos`` synthetic training videos of ~``--snippets`` snippets (2048 / 512 / 128 dims,
float16 on disk) into a temporary folder, trains CLIP-AE unsupervised on them with ``clipae-train``
and prints the time of each round (clustering + epochs) and the total. ``reduced`` is a small model
for CPUs and CI; ``full`` is the ``thumos14`` configuration.
"""
from __future__ import annotations

import argparse
import csv
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..models import train
from ..models.synthetic import SyntheticSpec, generate

REDUCED = ["model.hidden_dim=128", "model.attention_dim=32", "model.caf_dim=32", "model.ccp_dim=32",
           "train.batch_size=16"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clipae-bench train", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=["reduced", "full"], default="reduced")
    p.add_argument("--videos", type=int, default=200)
    p.add_argument("--snippets", type=int, default=750)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--rounds", type=int, default=None, help="default: 3 (reduced), the config's (full)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per round; default: 3 (reduced), the config's (full)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workdir", help="where to write data and run (default: a temporary folder, removed)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)

    overrides = [f"train.device={a.device}"] + (REDUCED if a.size == "reduced" else [])
    rounds = a.rounds if a.rounds is not None else (3 if a.size == "reduced" else None)
    epochs = a.epochs if a.epochs is not None else (3 if a.size == "reduced" else None)
    if epochs is not None:
        overrides.append(f"train.epochs_per_round={epochs}")
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        root = Path(tmp)
        t0 = time.time()
        paths = generate(root / "data", SyntheticSpec(train=a.videos, test=0, classes=a.classes,
                                                      snippets=a.snippets, dtype="float16"))
        gen_s = time.time() - t0
        argv_train = ["--manifest", str(paths["manifest"]), "--annotations", str(paths["ground_truth"]),
                      "--out", str(root / "run"), "--config", "thumos14", "--quiet"]
        if rounds is not None:
            argv_train += ["--rounds", str(rounds)]
        for o in overrides:
            argv_train += ["--set", o]
        t0 = time.time()
        rc = train.main(argv_train)
        total = time.time() - t0
        if rc:
            return rc
        with open(root / "run" / "rounds.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(f"clipae-bench train: {a.size} model, {a.videos} videos x ~{a.snippets} snippets, {len(rows)} rounds, "
          f"device {device} ({where}); synthetic data written in {gen_s:.1f}s")
    print("round  seconds  NMI    ARI")
    for r in rows:
        print(f"{r['round']:>5}  {float(r['round_s']):7.1f}  {float(r['nmi']):.3f}  {float(r['ari']):.3f}")
    print(f"total training wall time (incl. setup and feature statistics): {total:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
