"""``clipae-eval``: score a results file, or predict with a trained run and score that.

::

    clipae-eval --predictions P --annotations A [--subset S] [--tiou 0.1:0.7:0.1]
                [--protocol activitynet|thumos14-kit] [--json OUT] [--per-class]
    clipae-eval --run RUN [--manifest M] [--annotations A] [--subset S] [-o PRED] [...]

The first form scores any ActivityNet-schema results file, another method's included. The second
writes the run's predictions (default ``RUN/predictions_<subset>.json``) and scores them when
ground truth is available. Defaults (thresholds, subset, table layout): :mod:`clipae.eval.report`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from clipae.eval.mapping import METHODS, MappingError
from clipae.eval.predict import PredictError, load_trained_run, predict_results
from clipae.eval.proposals import ProposalConfigError
from clipae.eval.report import PROTOCOLS, TiouError, default_subset, default_tious, parse_tious, score
from clipae.eval.results import UNKNOWN_VIDEO_POLICIES, ResultsError, build_inputs, read_results, write_results
from clipae.pipeline.annotations import AnnotationError, load_ground_truth

ERRORS = (AnnotationError, ResultsError, PredictError, MappingError, ProposalConfigError, TiouError)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipae-eval", description="Temporal detection mAP, as the official evaluators compute it.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", help="results file (ActivityNet results schema) to score")
    src.add_argument("--run", help="trained run folder: predict, write the results, score them")
    p.add_argument("--annotations", help="ground truth, any supported format (detected)")
    p.add_argument("--subset", help="subset to score (default: test if annotated, else validation)")
    p.add_argument("--tiou", help="thresholds: start:stop:step or a list (default: the dataset's)")
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="activitynet",
                   help="activitynet (official ActivityNet evaluator, default) or thumos14-kit (official MATLAB kit)")
    p.add_argument("--json", help="write {tiou, mAP, average, means, per_class} here")
    p.add_argument("--per-class", action="store_true", help="print per-class AP too")
    p.add_argument("--unknown-videos", choices=UNKNOWN_VIDEO_POLICIES, default="error",
                   help="predicted videos outside the subset: error (default), false-positive (as the "
                        "official evaluator), ignore")
    g = p.add_argument_group("with --run")
    g.add_argument("--manifest", help="manifest.jsonl of the features to predict on (default: the run's)")
    g.add_argument("-o", "--output", help="where to write the predictions (default RUN/predictions_<subset>.json)")
    g.add_argument("--mapping", choices=list(METHODS), default="hungarian", help="cluster -> class mapping")
    g.add_argument("--allow-missing", action="store_true",
                   help="score even if videos of the subset are missing from the manifest")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _run_setting(run, name: str):
    """``name`` recorded in the run's config (top level or its ``data`` section), else ``None``."""
    cfg = getattr(run, "config", None)
    for section in (cfg, getattr(cfg, "data", None)):
        value = section.get(name) if isinstance(section, dict) else getattr(section, name, None)
        if value:
            return value
    return None


def _predict(args) -> tuple[dict, object, str]:
    run = load_trained_run(args.run)
    manifest = args.manifest or _run_setting(run, "manifest")
    annotations = args.annotations or _run_setting(run, "annotations")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.run:
            results, gt, subset = _predict(args)
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
        inputs = build_inputs(gt, subset, results, args.unknown_videos)
        result = score(inputs, tious, args.protocol, subset)
        elapsed = time.perf_counter() - t0
    except (*ERRORS, OSError) as e:  # OSError: an output that cannot be written
        print(f"clipae-eval: {e}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{len(inputs.pred_score)} predictions, {len(inputs.gt_class)} ground-truth instances, "
          f"{len(inputs.classes)} classes, subset {subset}, protocol {args.protocol} ({elapsed:.2f} s)")
    print(result.table(per_class=args.per_class))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
        except OSError as e:
            print(f"clipae-eval: --json: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
