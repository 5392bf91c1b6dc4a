"""The ActivityNet detection AP: hand-computed cases, the per-prediction loop on random inputs,
bad input, and the real ActivityNet v1.2 ground truth."""
import json
from pathlib import Path

import numpy as np
import pytest

from clipae.eval import detection, reference
from clipae.eval.results import EvalInputs, ResultsError, build_inputs
from clipae.datasets.annotations import GroundTruth, load_ground_truth

DATA = Path(__file__).parent / "data"


def make_gt(videos, ambiguous=None, subset="test"):
    """``videos``: {video: [(label, start, end), ...]}."""
    db = {v: {"subset": subset, "duration": 100.0,
              "annotations": [{"label": l, "segment": [s, e]} for l, s, e in anns]} for v, anns in videos.items()}
    classes = sorted({l for anns in videos.values() for l, _, _ in anns})
    return GroundTruth(db, classes, ambiguous or {})


def make_results(preds):
    """``preds``: {video: [(label, score, start, end), ...]}."""
    return {v: [{"label": l, "score": sc, "segment": [s, e]} for l, sc, s, e in rows] for v, rows in preds.items()}


def anet_ap(videos, preds, tious, **kw):
    inputs = build_inputs(make_gt(videos), "test", make_results(preds), **kw)
    ap = detection.evaluate(inputs, tious)
    np.testing.assert_array_equal(ap, reference.evaluate(inputs, tious))
    return ap


# --------------------------------------------------------------------------- hand-computed cases

def test_tied_scores_take_the_later_prediction_first():
    # p1 (FP) and p2 (TP) tie at 0.8; the official argsort()[::-1] takes p2 first:
    # TP TP FP -> AP = 0.5*1 + 0.5*1 = 1 (file order would give TP FP TP -> 0.8333)
    ap = anet_ap({"v": [("A", 0, 10), ("A", 20, 30)]},
                 {"v": [("A", 0.9, 0, 10), ("A", 0.8, 40, 50), ("A", 0.8, 20, 30)]}, [0.5])
    assert ap[0, 0] == pytest.approx(1.0)
    ap = anet_ap({"v": [("A", 0, 10), ("A", 20, 30)]},
                 {"v": [("A", 0.9, 0, 10), ("A", 0.8, 20, 30), ("A", 0.8, 40, 50)]}, [0.5])
    assert ap[0, 0] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_duplicate_ground_truth_needs_two_predictions():
    gt = {"v": [("A", 0, 10), ("A", 0, 10)]}
    assert anet_ap(gt, {"v": [("A", 0.9, 0, 10)]}, [0.5])[0, 0] == pytest.approx(0.5)
    assert anet_ap(gt, {"v": [("A", 0.9, 0, 10), ("A", 0.8, 1, 10)]}, [0.5])[0, 0] == pytest.approx(1.0)


def test_class_without_prediction_scores_zero():
    ap = anet_ap({"v": [("A", 0, 10), ("B", 20, 30)]}, {"v": [("A", 0.9, 0, 10)]}, [0.5, 0.7])
    np.testing.assert_allclose(ap, [[1.0, 0.0], [1.0, 0.0]])
    assert ap.mean(axis=1) == pytest.approx([0.5, 0.5])


def test_prediction_overlapping_two_ground_truths_takes_the_higher_tiou():
    # p0 [5,15]: tIoU 1/3 with g0 [0,10], 7/15 with g1 [8,20] -> takes g1 at t=0.3;
    # p1 [8,20] then finds g1 locked and g0 at tIoU 0.1 < 0.3 -> FP. TP FP: AP 0.5.
    gt = {"v": [("A", 0, 10), ("A", 8, 20)]}
    preds = {"v": [("A", 0.9, 5, 15), ("A", 0.8, 8, 20)]}
    assert anet_ap(gt, preds, [0.3])[0, 0] == pytest.approx(0.5)
    # at t=0.5 p0 matches nothing (FP) and p1 matches g1: FP TP -> AP 0.5 * 0.5
    assert anet_ap(gt, preds, [0.5])[0, 0] == pytest.approx(0.25)


def test_equal_tiou_takes_the_later_ground_truth():
    # p0 [1,5] has tIoU 0.2 with both g0 [0,2] and g1 [4,6]; it takes g1 (visited first), so
    # p1 = g1 is a FP and p2 = g0 a TP: TP FP TP -> 0.5 + 0.5 * 2/3
    ap = anet_ap({"v": [("A", 0, 2), ("A", 4, 6)]},
                 {"v": [("A", 0.9, 1, 5), ("A", 0.8, 4, 6), ("A", 0.7, 0, 2)]}, [0.2])
    assert ap[0, 0] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_threshold_is_inclusive():
    # tIoU exactly 0.5 counts (>=)
    assert anet_ap({"v": [("A", 0, 10)]}, {"v": [("A", 0.9, 0, 5)]}, [0.5])[0, 0] == 1.0


def test_predictions_on_a_video_without_ground_truth_of_the_class_are_false_positives():
    gt = {"v1": [("A", 0, 10)], "v2": [("B", 0, 10)]}
    ap = anet_ap(gt, {"v2": [("A", 0.9, 0, 10)], "v1": [("A", 0.5, 0, 10)]}, [0.5])
    assert ap[0, 0] == pytest.approx(0.5)  # FP then TP


def test_zero_length_ground_truth_counts_but_is_never_matched():
    gt = {"v": [("A", 0, 10), ("A", 5, 5)]}
    preds = {"v": [("A", 0.9, 0, 10), ("A", 0.8, 4, 6)]}
    np.testing.assert_allclose(anet_ap(gt, preds, [0.1, 0.5]), [[0.5], [0.5]])


# --------------------------------------------------------------------------- against the loop

def random_inputs(rng):
    n_vid, n_cls = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    n_gt, n_pred = int(rng.integers(n_cls, 25)), int(rng.integers(0, 80))
    gs = rng.integers(0, 30, n_gt).astype(float)
    gl = rng.integers(0, 8, n_gt).astype(float)            # some zero-length ground truth
    gc = rng.integers(0, n_cls, n_gt)
    gc[:n_cls] = np.arange(n_cls)                            # every class has ground truth
    ps = rng.integers(0, 30, n_pred) + rng.choice([0, 0.5], n_pred)
    pl = rng.integers(1, 10, n_pred).astype(float)
    dup = rng.random(n_pred) < 0.2                           # some exact copies of ground truth
    pick = rng.integers(0, n_gt, n_pred)
    ps[dup], pl[dup] = gs[pick[dup]], np.maximum(gl[pick[dup]], 1)
    score = rng.integers(0, 5, n_pred) / 4 if rng.random() < 0.5 else rng.random(n_pred)
    return EvalInputs(
        classes=[f"c{i}" for i in range(n_cls)], videos=[f"v{i}" for i in range(n_vid + 1)],
        gt_video=rng.integers(0, n_vid, n_gt), gt_class=gc, gt_segments=np.stack([gs, gs + gl], 1),
        pred_video=rng.integers(0, n_vid + 1, n_pred),      # video n_vid has no ground truth
        pred_class=rng.integers(0, n_cls, n_pred), pred_segments=np.stack([ps, ps + pl], 1), pred_score=score)


def test_vectorised_equals_the_per_prediction_loop_on_random_inputs():
    rng = np.random.default_rng(1234)
    tious = np.linspace(0.1, 0.9, 9)
    for _ in range(400):
        inputs = random_inputs(rng)
        got, want = detection.evaluate(inputs, tious), reference.evaluate(inputs, tious)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_activitynet_v12_validation_with_exact_predictions():
    gt = load_ground_truth(DATA / "anet12" / "activity_net.v1-2.json")
    val = gt.subset("validation")
    # every positive-length instance predicted exactly, scores decreasing in file order
    results, n = {}, 0
    for vid, v in val.database.items():
        rows = []
        for a in v["annotations"]:
            if a["segment"][1] > a["segment"][0]:
                rows.append({"label": a["label"], "score": 1.0 - n * 1e-5, "segment": a["segment"]})
                n += 1
        results[vid] = rows
    inputs = build_inputs(gt, "validation", results)
    ap = detection.evaluate(inputs, detection.ACTIVITYNET_TIOU)
    np.testing.assert_array_equal(ap, reference.evaluate(inputs, detection.ACTIVITYNET_TIOU))
    # the three zero-length instances of validation are never matched: AP = recall of their class
    npos = inputs.num_gt_per_class
    zero = np.bincount(inputs.gt_class[inputs.gt_segments[:, 1] == inputs.gt_segments[:, 0]], minlength=len(npos))
    assert zero.sum() == 3
    np.testing.assert_allclose(ap, np.broadcast_to((npos - zero) / npos, ap.shape))


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("entry,message", [
    ({"label": "A", "score": float("nan"), "segment": [0, 1]}, "not a finite number"),
    ({"label": "A", "score": float("inf"), "segment": [0, 1]}, "not a finite number"),
    ({"label": "A", "score": "0.5", "segment": [0, 1]}, "not a number"),
    ({"label": "A", "score": 0.5, "segment": [3, 3]}, "start < end"),
    ({"label": "A", "score": 0.5, "segment": [4, 3]}, "start < end"),
    ({"label": "A", "score": 0.5, "segment": [0, float("nan")]}, "not a finite number"),
    ({"label": "A", "score": 0.5, "segment": [1]}, r"not \[start, end\]"),
    ({"label": "A", "segment": [0, 1]}, "needs 'label', 'score' and 'segment'"),
    ({"label": "Nope", "score": 0.5, "segment": [0, 1]}, "label 'Nope' is not a class"),
])
def test_bad_predictions_are_refused_with_one_line(entry, message):
    results = {"v": [{"label": "A", "score": 0.9, "segment": [0, 10]}, entry]}
    with pytest.raises(ResultsError, match=message) as err:
        build_inputs(make_gt({"v": [("A", 0, 10)]}), "test", results)
    assert "\n" not in str(err.value)


def test_no_results_and_unknown_videos():
    gt = make_gt({"v": [("A", 0, 10)], "w": [("B", 0, 10)]})
    with pytest.raises(ResultsError, match="no predictions"):
        build_inputs(gt, "test", {})
    with pytest.raises(ResultsError, match="no predictions"):
        build_inputs(gt, "test", {"v": []})
    results = make_results({"v": [("A", 0.5, 0, 10)], "zzz": [("A", 0.9, 0, 10)]})
    with pytest.raises(ResultsError, match="1 predicted videos are not in subset 'test'"):
        build_inputs(gt, "test", results)
    fp = build_inputs(gt, "test", results, unknown_videos="false-positive")
    assert detection.evaluate(fp, [0.5])[0, 0] == pytest.approx(0.5)  # the official evaluator's FP
    ignored = build_inputs(gt, "test", results, unknown_videos="ignore")
    assert detection.evaluate(ignored, [0.5])[0, 0] == 1.0
    assert "left out" in ignored.notes[0]


def test_v_prefix_and_labels_absent_from_the_subset():
    gt = GroundTruth({"abc": {"subset": "validation", "duration": 9, "annotations": [{"label": "A", "segment": [0, 5]}]},
                      "xyz": {"subset": "training", "duration": 9, "annotations": [{"label": "B", "segment": [0, 5]}]}},
                     ["A", "B"])
    inputs = build_inputs(gt, "validation", make_results({"v_abc": [("A", 0.9, 0, 5), ("B", 0.8, 0, 5)]}))
    assert inputs.classes == ["A"] and len(inputs.pred_score) == 1
    assert "absent from the subset" in inputs.notes[0]
    assert detection.evaluate(inputs, [0.5])[0, 0] == 1.0


def test_results_file_reading(tmp_path):
    from clipae.eval.results import read_results, write_results
    write_results(tmp_path / "r.json", make_results({"v": [("A", 0.9, 0, 10)]}), version="x")
    assert read_results(tmp_path / "r.json")["v"][0]["label"] == "A"
    (tmp_path / "bad.json").write_text(json.dumps({"database": {}}))
    with pytest.raises(ResultsError, match="no 'results'"):
        read_results(tmp_path / "bad.json")


def test_numpy_scalars_and_booleans():
    gt = make_gt({"v": [("A", 0, 10)]})
    ok = {"v": [{"label": "A", "score": np.float64(0.5), "segment": [np.float64(0), 10]}]}
    assert detection.evaluate(build_inputs(gt, "test", ok), [0.5])[0, 0] == 1.0
    with pytest.raises(ResultsError, match="not a number"):
        build_inputs(gt, "test", {"v": [{"label": "A", "score": True, "segment": [0, 10]}]})


def test_remapped_ids_are_counted_in_one_note_and_strict_ids_match_exactly():
    gt = make_gt({"abc": [("A", 0, 10)], "v_def": [("A", 0, 10)], "ghi": [("A", 0, 10)]})
    results = make_results({"v_abc": [("A", 0.9, 0, 10)], "def": [("A", 0.8, 0, 10)], "ghi": [("A", 0.7, 0, 10)]})
    inputs = build_inputs(gt, "test", results)
    remap = [n for n in inputs.notes if "'v_' prefix" in n]
    assert len(remap) == 1 and remap[0].startswith("2 predicted video ids") and "'v_abc' as 'abc'" in remap[0]
    assert detection.evaluate(inputs, [0.5])[0, 0] == 1.0
    # exact ids only: the two remapped videos are outside the subset, as for the official evaluators
    with pytest.raises(ResultsError, match="2 predicted videos are not in subset 'test'.*2 of them differ "
                                           "from a ground-truth id only by the 'v_' prefix"):
        build_inputs(gt, "test", results, strict_ids=True)
    fp = build_inputs(gt, "test", results, unknown_videos="false-positive", strict_ids=True)
    assert not any("as 'abc'" in n for n in fp.notes) and "scored as false positives" in fp.notes[0]
    # ranked FP FP TP against 3 ground truths: AP = (1/3) / 3
    assert detection.evaluate(fp, [0.5])[0, 0] == pytest.approx(1 / 9)
    ignored = build_inputs(gt, "test", results, unknown_videos="ignore", strict_ids=True)
    assert len(ignored.pred_score) == 1 and detection.evaluate(ignored, [0.5])[0, 0] == pytest.approx(1 / 3)
    # exact ids give no note
    exact = build_inputs(gt, "test", make_results({"abc": [("A", 0.9, 0, 10)]}))
    assert not any("'v_' prefix" in n for n in exact.notes)
