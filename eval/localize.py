"""``clipae-localize video.mp4 [--run RUN]``: the actions of one video, in one command.

Extracts the video's features in memory with the extraction settings recorded in the run
(grid, streams, weights), runs the model, turns its T-CAM and attention into proposals
(:mod:`clipae.eval.proposals`), maps clusters to classes for an unsupervised run
(:mod:`clipae.eval.mapping`, the mapping saved with the run), prints a table of proposals and the
latency of each stage, and optionally writes the ActivityNet results json (``-o``) and a timeline
picture (``--plot``: T-CAM of the detected classes, attention, proposals, and the ground truth
when ``--annotations`` knows the video). A video without an audio track works: its audio stream is
zeros and the model is told ``has_audio=False``.

``--zero-shot NAMES`` needs no run: the video's ``clip`` stream is scored against CLIP text
embeddings of the class names (:mod:`clipae.eval.zero_shot`) and the same proposal code turns
that into proposals.

``--run`` defaults to the ``CLIPAE_RUN`` environment variable. A run trained on features made with
``--random-weights`` needs ``--random-weights`` here too (the same seeded random networks), and
the command says so loudly.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..core.grid import SnippetGrid
from ..datasets.annotations import canonical_id, load_ground_truth
from ..decoding.decode import FrameSettings, InputError
from ..extractors.base import ExtractorOptions
from ..models.trained_on import TrainedOn
from ..pipeline.extract import ExtractionError, default_batch_size, extract_video
from .mapping import CLIP_TEXT, METHODS
from .predict import (PredictError, check_record, cluster_mapping, default_mapping_method, load_trained_run,
                      predict_video, run_streams, to_entries)
from .proposals import Proposals
from .results import write_results


class Timer:
    """Wall-clock seconds per named stage."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        yield
        self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0

    def report(self) -> str:
        total = sum(self.stages.values())
        return "latency: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.stages.items()) + f"; total {total:.2f} s"


def check_random_weights(run, random_weights: bool) -> None:
    """``--random-weights`` exactly when the run's features were made with random weights."""
    weights, random = run.extraction.weights, run.extraction.random_streams
    if random and not random_weights:
        raise PredictError(f"the run was trained on features made with random weights ({', '.join(random)}); "
                           f"pass --random-weights to extract this video the same way")
    if random_weights and len(random) < len(weights):
        real = sorted(set(weights) - set(random))
        raise PredictError(f"--random-weights, but the run's {', '.join(real)} features were made with "
                           f"pretrained weights")


def frame_options(trained_on: TrainedOn) -> dict:
    """``{"crops", "keep_crops", "short_side"}`` a run's visual features were extracted with
    (from their recorded settings; the defaults where none are recorded)."""
    out = {"crops": "center", "keep_crops": False, "short_side": FrameSettings.short_side}
    for per_stream in trained_on.streams.values():
        settings = per_stream.settings
        if "crops" in settings:
            out["crops"] = str(settings["crops"])
            out["keep_crops"] = str(settings.get("stored", "")).startswith("per crop")
        short = ((settings.get("decode") or {}).get("frames") or {}).get("short_side")
        if short:
            out["short_side"] = int(short)
    return out


def extract_features(video: Path, run, device: str, weights_dir: str | None,
                     random_weights: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    """``(manifest-like record, {stream: (T, dim)})`` of ``video`` with the run's extraction settings."""
    views = frame_options(run.extraction)
    # each stream's own options (--clip-model, --flow, ...), as the training features were made
    dev = torch.device(device)
    options = ExtractorOptions(device=dev, batch_size=default_batch_size(run_streams(run), dev), weights_dir=weights_dir,
                               random_weights=random_weights, extra=run.extraction.options(), crops=views["crops"],
                               keep_crops=views["keep_crops"])
    try:
        record, features = extract_video(str(video), run_streams(run), run.extraction.grid, options,
                                         frame_settings=FrameSettings(short_side=views["short_side"]))
    except (ExtractionError, InputError) as e:  # missing weights, a stream that cannot start; a bad video
        raise PredictError(f"{video}: {e}") from None
    check_record(run, record, run_streams(run))
    return record, features


def print_table(entries: list[dict], top: int | None) -> None:
    shown = entries[:top] if top else entries
    print(f"{'start':>8} {'end':>8}  {'label':<24} {'score':>7}" + ("  cluster" if entries and "cluster" in entries[0] else ""))
    for e in shown:
        cluster = f"  {e['cluster']:>7}" if "cluster" in e else ""
        print(f"{e['segment'][0]:8.2f} {e['segment'][1]:8.2f}  {str(e['label']):<24} {e['score']:7.3f}{cluster}")
    if len(shown) < len(entries):
        print(f"... {len(entries) - len(shown)} more (see -o)")


def plot_timeline(path: str, outputs: dict, props: Proposals, labels: list[str | None], grid: SnippetGrid,
                  duration: float | None, title: str, ground_truth: list[dict] | None = None) -> None:
    """T-CAM of the detected columns and attention over time, proposals and ground truth below."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cas, attention = np.asarray(outputs["cas"]), np.asarray(outputs["attention"]).reshape(-1)
    t = grid.centre_s(np.arange(len(attention)))
    columns = list(dict.fromkeys(props.column.tolist()))[:5]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    ax1.plot(t, attention, color="black", lw=1.5, label="attention")
    for k in columns:
        ax1.plot(t, cas[:, k], lw=1, label=f"T-CAM {labels[k] or f'cluster {k}'}")
    ax1.set_ylim(-0.02, 1.02)
    ax1.set_ylabel("activation")
    ax1.legend(loc="upper right", fontsize=8)
    ax1.set_title(title)
    colors = {k: f"C{i + 1}" for i, k in enumerate(columns)}
    shown = props.take(np.isin(props.column, columns))
    best = shown.score.max() if len(shown) else 1.0
    for k, s, e, sc in zip(shown.column, shown.start, shown.end, shown.score):
        ax2.barh(1, e - s, left=s, height=0.6, color=colors[int(k)], alpha=float(np.clip(sc / best, 0.15, 1.0)))
    for a in ground_truth or []:
        ax2.barh(0, a["segment"][1] - a["segment"][0], left=a["segment"][0], height=0.6, color="grey")
        ax2.text(a["segment"][0], -0.45, a["label"], fontsize=7)
    ax2.set_yticks([0, 1], ["ground truth", "proposals"])
    ax2.set_xlabel("time (s)")
    ax2.set_xlim(0, duration or float(grid.end_s(len(attention) - 1)))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipae-localize", description="Localise the actions of one video.")
    p.add_argument("video", help="video file")
    p.add_argument("--run", default=os.environ.get("CLIPAE_RUN"), help="trained run folder (default: $CLIPAE_RUN)")
    p.add_argument("-o", "--output", help="write the proposals as an ActivityNet results json")
    p.add_argument("--plot", help="write a timeline picture (png)")
    p.add_argument("--annotations", help="ground truth to draw (and to build the cluster mapping if the run lacks it)")
    p.add_argument("--device", default="cpu", help="torch device for extraction (default cpu)")
    p.add_argument("--weights-dir", help="folder of downloaded checkpoints")
    p.add_argument("--random-weights", action="store_true",
                   help="extract with random weights, as a run trained on --random-weights features needs "
                        "(the proposals then mean nothing)")
    p.add_argument("--top", type=int, default=20, help="rows of the printed table (0: all)")
    p.add_argument("--mapping", choices=[*METHODS, CLIP_TEXT],
                   help="cluster -> class mapping of an unsupervised run (default: hungarian; clip-text when the "
                        "run has cluster names and neither a saved mapping nor --annotations)")
    z = p.add_argument_group("zero-shot (no run)")
    z.add_argument("--zero-shot", metavar="NAMES",
                   help="localise these classes without training: a .txt of class names (one per line) or a ground truth")
    z.add_argument("--clip-model", default="ViT-B-16", help="open_clip model of the clip stream (default ViT-B-16)")
    z.add_argument("--clip-frames", type=int, default=0, metavar="K",
                   help="evenly spaced frames per snippet for the clip stream (default 0: all)")
    z.add_argument("--clip-weights", metavar="PATH", help="a local CLIP checkpoint (default: the known download)")
    return p


def zero_shot_video(video: Path, args, timer: Timer) -> tuple[dict, dict, Proposals, list[str]]:
    """``(record, outputs, proposals, names)`` of one video localised from its clip rows alone."""
    from .zero_shot import localize_rows, read_class_names, text_tower
    names = read_class_names(args.zero_shot)
    with timer.stage("text tower"):
        tower = text_tower(args.clip_model, None, args.weights_dir, args.random_weights, args.device, args.clip_weights)
        text = tower.embed(names)
    options = ExtractorOptions(device=torch.device(args.device), weights_dir=args.weights_dir,
                               random_weights=args.random_weights,
                               weights_paths={"clip": args.clip_weights} if args.clip_weights else {},
                               extra={"clip_model": args.clip_model, "clip_frames": args.clip_frames})
    with timer.stage("extract"):
        try:
            record, features = extract_video(str(video), ["clip"], SnippetGrid(), options)
        except (ExtractionError, InputError) as e:
            raise PredictError(f"{video}: {e}") from None
    grid = SnippetGrid.from_record(record)
    with timer.stage("zero-shot + proposals"):
        outputs, props = localize_rows(features["clip"], text, tower.logit_scale, grid, record.get("duration_s"))
    return record, outputs, props, names


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    video = Path(args.video)
    timer = Timer()
    if not video.is_file():
        raise PredictError(f"{video}: no such file")
    if args.zero_shot:
        if args.random_weights:
            print("clipae-localize: WARNING: --random-weights: RANDOM image and text towers; the proposals "
                  "mean nothing", file=sys.stderr)
        record, outputs, props, labels = zero_shot_video(video, args, timer)
        return _report(args, video, record, outputs, props, labels, None, SnippetGrid.from_record(record),
                       timer, keep_cluster=False)
    if not args.run:
        raise PredictError("no run: pass --run RUN or set CLIPAE_RUN (or --zero-shot NAMES)")
    with timer.stage("load run"):
        run = load_trained_run(args.run)
        gt = load_ground_truth(args.annotations) if args.annotations else None
        mapping = cluster_mapping(run, args.run, gt, args.mapping or default_mapping_method(args.run, gt))
        cfg = run.config.proposals   # the run's own proposal settings (defaults for older runs)
        check_random_weights(run, args.random_weights)
    if args.random_weights:
        print("clipae-localize: WARNING: --random-weights: features come from RANDOM networks, "
              "as the run's did; the proposals mean nothing", file=sys.stderr)
    with timer.stage("extract"):
        record, features = extract_features(video, run, args.device, args.weights_dir, args.random_weights)
    grid = SnippetGrid.from_record(record)
    with timer.stage("model + proposals"):
        outputs, props = predict_video(run, features, bool(record.get("has_audio", False)), grid,
                                       record.get("duration_s"), cfg)
    labels = list(run.classes) if mapping is None else mapping.cluster_to_class
    return _report(args, video, record, outputs, props, labels, gt, grid, timer, keep_cluster=mapping is not None)


def _report(args, video: Path, record: dict, outputs: dict, props: Proposals, labels: list[str | None],
            gt, grid: SnippetGrid, timer: Timer, keep_cluster: bool) -> int:
    """Write ``-o`` and ``--plot``, print the summary, the table of proposals and the latency."""
    if args.annotations and gt is None:
        gt = load_ground_truth(args.annotations)
    entries = to_entries(props, labels, keep_cluster=keep_cluster)
    video_id = video.stem
    truth = None
    if gt is not None and (key := canonical_id(video_id, gt.database)) is not None:
        truth = gt.database[key]["annotations"]
    if args.output:
        write_results(args.output, {video_id: entries}, version="clipae-localize")
    if args.plot:
        with timer.stage("plot"):
            plot_timeline(args.plot, outputs, props, labels, grid, record.get("duration_s"), video.name, truth)
    audio = "with audio" if record.get("has_audio") else "no audio track"
    duration = record.get("duration_s")
    print(f"{video.name}: {'?' if duration is None else f'{duration:.2f}'} s, {len(outputs['attention'])} snippets, "
          f"{audio}, {len(entries)} proposals")
    print_table(entries, args.top)
    print(timer.report())
    return 0
