"""``clipae-bench eval``: speed of the evaluator on ActivityNet-v1.2-sized inputs.

Builds a ground truth shaped like ActivityNet v1.2 validation (2383 videos, 100 classes, one to
three instances per video) or reads a real one (``--annotations``), draws ``--per-video`` random
predictions per video (half near the video's instances with its label, half anywhere with any
label; scores rounded so that ties occur), then times, in one run:

- clipae's vectorised evaluator (:func:`clipae.eval.detection.evaluate`), and the reading and
  checking of the results (:func:`clipae.eval.results.build_inputs`);
- the per-prediction loop of the official algorithm (:mod:`clipae.eval.reference`) on the same
  inputs, unless ``--no-reference``;

and prints both times, their ratio and the largest AP difference.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ..datasets.annotations import GroundTruth, load_ground_truth
from ..eval import detection, reference
from ..eval.report import parse_tious
from ..eval.results import build_inputs


def synthetic_ground_truth(rng: np.random.Generator, videos: int, classes: int) -> GroundTruth:
    names = [f"class_{c:03d}" for c in range(classes)]
    db = {}
    for v in range(videos):
        duration = float(rng.uniform(20, 240))
        label = names[int(rng.integers(classes))]
        anns = []
        for _ in range(int(rng.integers(1, 4))):
            length = float(rng.uniform(0.05, 0.6)) * duration
            start = float(rng.uniform(0, duration - length))
            anns.append({"segment": [round(start, 2), round(start + length, 2)], "label": label})
        db[f"vid_{v:05d}"] = {"subset": "validation", "duration": round(duration, 2), "annotations": anns}
    return GroundTruth(db, names, {}, "synthetic ActivityNet-v1.2-sized")


def random_results(rng: np.random.Generator, gt: GroundTruth, per_video: int) -> dict[str, list[dict]]:
    results = {}
    for vid, v in gt.database.items():
        duration = v.get("duration") or max(a["segment"][1] for a in v["annotations"]) + 1.0
        entries = []
        for i in range(per_video):
            if i % 2 == 0 and v["annotations"]:
                a = v["annotations"][int(rng.integers(len(v["annotations"])))]
                s, e = a["segment"]
                jitter = rng.normal(0, 0.15 * max(e - s, 1.0), 2)
                start, end = s + jitter[0], e + jitter[1]
                label = a["label"]
            else:
                start, end = np.sort(rng.uniform(0, duration, 2))
                label = gt.classes[int(rng.integers(len(gt.classes)))]
            if end - start < 0.1:
                end = start + 0.1
            entries.append({"label": label, "score": round(float(rng.random()), 3),
                            "segment": [float(start), float(end)]})
        results[vid] = entries
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clipae-bench eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--annotations", help="real ground truth instead of the synthetic one")
    p.add_argument("--subset", default="validation")
    p.add_argument("--videos", type=int, default=2383)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--per-video", type=int, default=100)
    p.add_argument("--tiou", default="0.5:0.95:0.05")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of the vectorised evaluator (best kept)")
    p.add_argument("--no-reference", action="store_true", help="skip the per-prediction loop")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    rng = np.random.default_rng(args.seed)
    gt = (load_ground_truth(args.annotations) if args.annotations
          else synthetic_ground_truth(rng, args.videos, args.classes))
    part = gt.subset(args.subset)
    results = random_results(rng, part, args.per_video)
    tious = parse_tious(args.tiou)

    t0 = time.perf_counter()
    inputs = build_inputs(gt, args.subset, results)
    t_read = time.perf_counter() - t0
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ap = detection.evaluate(inputs, tious)
        times.append(time.perf_counter() - t0)
    t_ours = min(times)
    print(f"{len(part.database)} videos, {len(inputs.classes)} classes, {len(inputs.gt_class)} ground-truth "
          f"instances, {len(inputs.pred_score)} predictions, {len(tious)} tIoU thresholds")
    print(f"read + check results: {t_read:.2f} s")
    print(f"clipae evaluator:     {t_ours:.2f} s (best of {args.repeat}), average mAP {100 * ap.mean():.2f}")
    if not args.no_reference:
        t0 = time.perf_counter()
        ref = reference.evaluate(inputs, tious)
        t_ref = time.perf_counter() - t0
        print(f"per-prediction loop:  {t_ref:.2f} s, average mAP {100 * ref.mean():.2f}")
        print(f"speed-up: {t_ref / t_ours:.1f}x; largest AP difference {np.abs(ap - ref).max():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
