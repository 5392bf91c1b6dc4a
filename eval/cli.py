"""``clipae-eval``: score a results file, or predict with a trained run and score that.

::

    clipae-eval --predictions P --annotations A [--subset S] [--tiou 0.1:0.7:0.1]
                [--protocol activitynet|thumos14-kit] [--json OUT] [--per-class]
                [--unknown-videos error|false-positive|ignore] [--strict-ids]
    clipae-eval --run RUN [--manifest M] [--annotations A] [--subset S] [-o PRED] [...]
    clipae-eval --zero-shot NAMES --manifest M [--annotations A] [--random-weights] [...]

The first form scores any ActivityNet-schema results file, another method's included. The second
writes the run's predictions (default ``RUN/predictions_<subset>.json``) and scores them when
ground truth is available. The third predicts without training (:mod:`clipae.eval.zero_shot`:
the manifest's ``clip`` rows against CLIP text embeddings of NAMES, a ``.txt`` of class names or
a ground truth) and writes ``<manifest folder>/zero_shot_<subset>.json``: a baseline row. Defaults (thresholds, subset, table layout): :mod:`clipae.eval.report`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..core.fsio import write_json_atomic
from ..datasets.annotations import AnnotationError, load_ground_truth
from .mapping import CLIP_TEXT, METHODS
from .predict import PredictError, load_trained_run, predict_results
from .report import PROTOCOLS, default_subset, default_tious, parse_tious, score
from .results import UNKNOWN_VIDEO_POLICIES, ResultsError, build_inputs, read_results, write_results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipae-eval", description="Temporal detection mAP, as the official evaluators compute it.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", help="results file (ActivityNet results schema) to score")
    src.add_argument("--run", help="trained run folder: predict, write the results, score them")
    src.add_argument("--zero-shot", metavar="NAMES",
                     help="no training: score the clip features of --manifest against these class names "
                          "(a .txt, one per line, or a ground truth)")
    p.add_argument("--annotations", help="ground truth, any supported format (detected)")
    p.add_argument("--subset", help="subset to score (default: test if annotated, else validation)")
    p.add_argument("--tiou", help="thresholds: start:stop:step or a list (default: the dataset's)")
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="activitynet",
                   help="activitynet (official ActivityNet evaluator, default) or thumos14-kit (official MATLAB kit)")
    p.add_argument("--json", help="write {tiou, mAP, average, means, per_class} here")
    p.add_argument("--per-class", action="store_true", help="print per-class AP too")
    p.add_argument("--unknown-videos", choices=UNKNOWN_VIDEO_POLICIES, default="error",
                   help="predicted videos outside the subset: error (default), false-positive (as the "
                        "official evaluators), ignore")
    p.add_argument("--strict-ids", action="store_true",
                   help="match predicted video ids exactly, as the official evaluators do (default: also with "
                        "or without the 'v_' prefix, counted in a note)")
    g = p.add_argument_group("with --run or --zero-shot")
    g.add_argument("--manifest", help="manifest.jsonl of the features to predict on (default: the run's)")
    g.add_argument("-o", "--output", help="where to write the predictions (default RUN/predictions_<subset>.json)")
    g.add_argument("--mapping", choices=[*METHODS, CLIP_TEXT], default="hungarian",
                   help="cluster -> class mapping (clip-text: the names of clipae-train --class-names, no ground truth)")
    g.add_argument("--allow-missing", action="store_true",
                   help="score even if videos of the subset are missing from the manifest")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    z = p.add_argument_group("with --zero-shot")
    z.add_argument("--weights-dir", help="folder of downloaded checkpoints (the clip stream's)")
    z.add_argument("--clip-weights", metavar="PATH", help="the CLIP checkpoint the clip features were made with")
    z.add_argument("--random-weights", action="store_true",
                   help="random text tower, for clip features made with --random-weights (the scores mean nothing)")
    z.add_argument("--device", default="cpu", help="torch device of the text tower (default cpu)")
    return p


def _predict(args) -> tuple[dict, object, str]:
    run = load_trained_run(args.run)
    manifest = args.manifest or run.extraction.manifest          # as clipae-train recorded them
    annotations = args.annotations or run.extraction.annotations
    if not manifest:
        raise PredictError("the run does not record its manifest: pass --manifest")
    gt = load_ground_truth(annotations) if annotations else None
    subset = args.subset or (default_subset(gt) if gt is not None else None)
    t0 = time.perf_counter()
    results, notes = predict_results(run, manifest, gt, subset, args.run, args.mapping, args.allow_missing, args.quiet)
    out = Path(args.output or Path(args.run) / f"predictions_{subset or 'all'}.json")
    write_results(out, results, version=f"clipae run {Path(args.run).name}")
    print(f"{sum(map(len, results.values()))} proposals for {len(results)} videos -> {out} "
          f"({time.perf_counter() - t0:.1f} s)")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return results, gt, subset


def _predict_zero_shot(args) -> tuple[dict, object, str]:
    from .zero_shot import predict_zero_shot, read_class_names
    if not args.manifest:
        raise PredictError("--zero-shot needs --manifest (features with a clip stream)")
    names = read_class_names(args.zero_shot)
    gt = load_ground_truth(args.annotations) if args.annotations else None
    subset = args.subset or (default_subset(gt) if gt is not None else None)
    t0 = time.perf_counter()
    results, notes = predict_zero_shot(args.manifest, names, gt, subset, args.weights_dir, args.random_weights,
                                       args.device, args.allow_missing, args.quiet, args.clip_weights)
    out = Path(args.output or Path(args.manifest).parent / f"zero_shot_{subset or 'all'}.json")
    write_results(out, results, version="clipae zero-shot")
    print(f"{sum(map(len, results.values()))} zero-shot proposals for {len(results)} videos -> {out} "
          f"({time.perf_counter() - t0:.1f} s)")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return results, gt, subset


def _check_json_folder(path: str | None) -> None:
    """``--json`` names a file in an existing folder (checked before the scoring, not after)."""
    if path is None:
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise ResultsError(f"--json {path}: no such folder {folder}")
    if Path(path).is_dir():
        raise ResultsError(f"--json {path}: is a folder, not a file")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    _check_json_folder(args.json)
    if args.run or args.zero_shot:
        if args.random_weights and not args.zero_shot:
            raise PredictError("--random-weights is an option of --zero-shot")
        results, gt, subset = _predict(args) if args.run else _predict_zero_shot(args)
        if gt is None:
            print("no ground truth (--annotations): predictions written, nothing scored")
            return 0
    else:
        if not args.annotations:
            raise AnnotationError("--annotations is needed to score --predictions")
        gt = load_ground_truth(args.annotations)
        results = read_results(args.predictions)
        subset = args.subset or default_subset(gt)
    tious = parse_tious(args.tiou) if args.tiou else default_tious(gt.subset(subset))
    t0 = time.perf_counter()
    inputs = build_inputs(gt, subset, results, args.unknown_videos, args.strict_ids)
    result = score(inputs, tious, args.protocol, subset)
    elapsed = time.perf_counter() - t0
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{len(inputs.pred_score)} predictions, {len(inputs.gt_class)} ground-truth instances, "
          f"{len(inputs.classes)} classes, subset {subset}, protocol {args.protocol} ({elapsed:.2f} s)")
    print(result.table(per_class=args.per_class))
    if args.json:
        try:
            write_json_atomic(args.json, result.to_json(), indent=1)
        except OSError as e:
            raise ResultsError(f"cannot write --json {args.json}: {e.strerror or e}") from None
    return 0
