"""``make demo``: the whole chain on a small rendered dataset, offline, in a few minutes on a CPU.

1. render the embedded dataset (:mod:`clipae.demo.data`): videos with sound in which
   three kinds of action appear in known segments, and their ground truth;
2. ``clipae-extract``  the four streams of every video into one manifest;
3. ``clipae-train``    CLIP-AE without labels (clusters → pseudo-labels → train, for a few rounds);
4. ``clipae-eval``     predictions on the testing videos and their mAP;
5. ``clipae-localize`` one testing video from its file, with a timeline picture.

Each stage runs as its own process, exactly as a user would type it (the command is printed).
Pretrained checkpoints found in the weights cache (``~/.cache/clipae/weights``) are used; when
one is missing every stream uses random weights, and the demo says so at the top and in the
caption of the mAP table: the numbers then show the pipeline working, not the method's accuracy.

    python -m clipae.demo.run [--out demo_out] [--size standard | small]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core.errors import WorkFailed
from ..core.weights import DEFAULT_WEIGHTS_DIR
from . import data as demo_data

#: the stages the demo runs, in order: commands of ``python -m clipae``
STAGES = ("extract", "train", "eval", "localize")
STREAMS = ("i3d_rgb", "i3d_flow", "clip", "vggish")


@dataclass(frozen=True)
class DemoExtraction:
    """The demo's extraction settings: all four streams, lightened to take minutes on two CPU
    cores. The defaults of ``clipae-extract`` (25 fps, 16-frame snippets, RAFT-large with 12
    updates, every frame through CLIP ViT-B-16) cost about 50 times more per second of video."""

    fps: float = 4.0              # 1 s snippets of 4 frames
    snippet_length: int = 4
    snippet_stride: int = 4
    flow: str = "raft_small"
    raft_iters: int = 2
    clip_model: str = "ViT-B-32"
    clip_frames: int = 1

    def argv(self) -> list[str]:
        return ["--streams", ",".join(STREAMS), "--fps", f"{self.fps:g}", "--snippet-length", str(self.snippet_length),
                "--snippet-stride", str(self.snippet_stride), "--flow", self.flow, "--raft-iters", str(self.raft_iters),
                "--clip-model", self.clip_model, "--clip-frames", str(self.clip_frames)]

    def weights(self) -> list:
        """The checkpoints (:class:`~clipae.core.weights.WeightsSpec`) these settings read."""
        from ..extractors import clip, flow, i3d, vggish

        return [i3d.WEIGHTS["rgb"], i3d.WEIGHTS["flow"], flow.RAFT_WEIGHTS[self.flow],
                clip.WEIGHTS[self.clip_model], vggish.VGGISH_WEIGHTS]


EXTRACTION = DemoExtraction()
#: THUMOS14's table layout (short actions): mAP at tIoU 0.1 ... 0.7
TIOU = "0.1:0.7:0.1"


@dataclass(frozen=True)
class DemoSize:
    """How much data the demo renders and how long it trains on it."""

    data: demo_data.DemoDatasetSpec
    epochs_per_round: int

    def train_config(self) -> dict:
        """``clipae-train`` configuration: the method at a size that trains in about a minute."""
        return {
            "data": {"train_subset": demo_data.TRAIN_SUBSET, "test_subset": demo_data.TEST_SUBSET, "num_segments": 16},
            "model": {"caf_dim": 64, "ccp_dim": 64, "hidden_dim": 128, "caf_stages": 1, "dropout": 0.5},
            "train": {"mode": "unsupervised", "rounds": 2, "epochs_per_round": self.epochs_per_round,
                      "batch_size": 6, "lr": 1.0e-3, "device": "cpu"},
        }


#: ``standard`` for ``make demo``, ``small`` for the test suite
SIZES = {
    "standard": DemoSize(demo_data.DemoDatasetSpec(), epochs_per_round=8),
    "small": DemoSize(demo_data.DemoDatasetSpec(num_train=4, num_test=2, duration_s=(3.5, 4.5), instances=(1, 1),
                                                instance_s=(1.0, 1.5), min_gap_s=0.8), epochs_per_round=4),
}


class DemoError(WorkFailed, RuntimeError):
    """A stage failed or is missing (one line)."""


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo writes each stage's output."""

    out: Path
    data: Path            # videos/ and ground_truth.json
    features: Path        # the extraction's output folder
    manifest: Path
    run: Path             # the trained run (its own folder for random weights: never resumed with real ones)
    train_config: Path
    metrics: Path         # clipae-eval --json
    localize: Path        # one video's proposals and timeline picture

    @classmethod
    def under(cls, out: Path, random_weights: bool) -> "DemoPaths":
        features = out / "features"
        return cls(out, out / "data", features, features / "manifest.jsonl",
                   out / ("run-random-weights" if random_weights else "run"),
                   out / "train_config.yaml", out / "eval" / "map.json", out / "localize")


@dataclass
class WeightsStatus:
    """Whether the demo's checkpoints are all in the cache, and which are missing."""

    weights_dir: Path
    missing: list[str] = field(default_factory=list)

    @property
    def real(self) -> bool:
        return not self.missing

    def banner(self) -> str:
        if self.real:
            return f"Weights: pretrained checkpoints from {self.weights_dir}."
        return (f"Weights: RANDOM. {len(self.missing)} pretrained checkpoint(s) are not in {self.weights_dir} "
                f"({', '.join(self.missing)}), so every stream uses random weights: the features and the mAP "
                f"below show the pipeline working, not the method's accuracy.")

    def caption(self) -> str:
        return "pretrained weights" if self.real else "RANDOM weights, not the method's accuracy"


def weights_status(weights_dir: Path, extraction: DemoExtraction = EXTRACTION) -> WeightsStatus:
    """Which of the extraction's checkpoints are missing from ``weights_dir``."""
    names = [spec.filename for spec in extraction.weights()]
    return WeightsStatus(weights_dir, [f for f in names if not (weights_dir / f).is_file()])


def run_stage(number: int, title: str, argv: list[str], env: dict) -> float:
    """Run one stage as a process; its output goes straight to the terminal. Returns seconds."""
    print(f"\n[{number}/5] {title}\n$ {shlex.join(argv)}", flush=True)
    t0 = time.time()
    proc = subprocess.run(argv, env=env)
    if proc.returncode != 0:
        raise DemoError(f"{title} failed (exit status {proc.returncode}); its messages are above")
    return time.time() - t0


def module_argv(command: str, *args) -> list[str]:
    return [sys.executable, "-m", "clipae", command, *map(str, args)]


def mAP_table(metrics: dict, caption: str) -> str:
    """The ``clipae-eval --json`` numbers as a table (percent) under a caption."""
    tiou, maps = metrics["tiou"], metrics["mAP"]
    head = "tIoU " + " ".join(f"{t:>6.2f}" for t in tiou) + "    avg"
    row = "mAP  " + " ".join(f"{100 * m:>6.1f}" for m in maps) + f" {100 * metrics['average']:>6.1f}"
    return f"{caption}\n{head}\n{row}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipae.demo.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="where everything is written (default demo_out/)")
    p.add_argument("--size", choices=sorted(SIZES), default="standard",
                   help="; ".join(f"{k}: {v.data.num_train} training + {v.data.num_test} testing videos of "
                                  f"{v.data.duration_s[0]:g}-{v.data.duration_s[1]:g} s" for k, v in SIZES.items()))
    p.add_argument("--seed", type=int, default=0, help="seed of the rendered dataset")
    p.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR,
                   help=f"pretrained checkpoints are looked for here (default {DEFAULT_WEIGHTS_DIR})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    weights = weights_status(args.weights_dir)
    print("clipae demo: rendered videos with sound -> extract -> train (unsupervised) -> eval -> localize")
    print(weights.banner())

    paths = DemoPaths.under(args.out, random_weights=not weights.real)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    quiet = ["--quiet"] if args.quiet else []
    weight_args = ["--weights-dir", str(args.weights_dir)] + ([] if weights.real else ["--random-weights"])
    seconds: dict[str, float] = {}
    try:
        size = SIZES[args.size]
        spec = dataclasses.replace(size.data, seed=args.seed)
        print(f"\n[1/5] rendering {spec.num_train} training and {spec.num_test} testing videos into {paths.data}")
        t0 = time.time()
        data = demo_data.build_dataset(paths.data, spec, progress=not args.quiet and sys.stderr.isatty())
        seconds["render"] = time.time() - t0

        seconds["extract"] = run_stage(2, "clipae-extract", module_argv(
            "extract", data.videos, paths.features, *EXTRACTION.argv(),
            *weight_args, *quiet), env)

        paths.out.mkdir(parents=True, exist_ok=True)
        paths.train_config.write_text(yaml.safe_dump(size.train_config(), sort_keys=False), encoding="utf-8")
        seconds["train"] = run_stage(3, "clipae-train", module_argv(
            "train", "--manifest", paths.manifest, "--annotations", data.ground_truth, "--out", paths.run,
            "--config", paths.train_config, *quiet), env)

        paths.metrics.parent.mkdir(parents=True, exist_ok=True)
        seconds["eval"] = run_stage(4, "clipae-eval", module_argv(
            "eval", "--run", paths.run, "--manifest", paths.manifest, "--annotations", data.ground_truth,
            "--subset", demo_data.TEST_SUBSET, "--tiou", TIOU, "--json", paths.metrics), env)

        video = data.subset_ids(demo_data.TEST_SUBSET)[0]
        paths.localize.mkdir(parents=True, exist_ok=True)
        seconds["localize"] = run_stage(5, "clipae-localize", module_argv(
            "localize", data.video_path(video), "--run", paths.run, "-o", paths.localize / f"{video}.json",
            "--plot", paths.localize / f"{video}.png", "--annotations", data.ground_truth,
            *weight_args), env)
        metrics = json.loads(paths.metrics.read_text(encoding="utf-8"))
    except (DemoError, demo_data.DemoDataError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1

    caption = (f"mAP (%) on the {spec.num_test} testing videos of the demo dataset, {len(spec.kinds)} kinds of action, "
               f"unsupervised ({weights.caption()})")
    print("\n" + mAP_table(metrics, caption))
    print(f"\nWritten under {paths.out}/:")
    for what, where in (("videos and ground truth", data.videos.parent), ("features and manifest", paths.manifest),
                        ("trained run", paths.run), ("training config", paths.train_config),
                        ("mAP (json)", paths.metrics), ("localized video", paths.localize / f"{video}.json"),
                        ("timeline picture", paths.localize / f"{video}.png")):
        print(f"  {what:<24} {where}")
    print("Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
