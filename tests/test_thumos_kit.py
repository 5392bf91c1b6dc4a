"""The THUMOS14 kit protocol, hand-computed, and where it must differ from ActivityNet's."""
from pathlib import Path

import numpy as np
import pytest

from clipae.eval import detection, thumos_kit
from clipae.eval.report import score
from clipae.eval.results import build_inputs
from clipae.datasets.annotations import load_ground_truth

from test_detection import make_gt, make_results

DATA = Path(__file__).parent / "data"


def both(videos, preds, tious, ambiguous=None):
    inputs = build_inputs(make_gt(videos, ambiguous), "test", make_results(preds))
    return detection.evaluate(inputs, tious)[:, 0], thumos_kit.evaluate(inputs, tious)[:, 0]


def test_ground_truth_centric_matching_differs_from_prediction_centric():
    # ActivityNet: p0 [5,15] takes g1 (higher tIoU), p1 [8,20] is then a FP -> AP 0.5.
    # Kit: g0 takes its best free detection p0 (overlap 1/3 > 0.3), g1 takes p1 (1.0) -> AP 1.
    anet, kit = both({"v": [("A", 0, 10), ("A", 8, 20)]}, {"v": [("A", 0.9, 5, 15), ("A", 0.8, 8, 20)]}, [0.3])
    assert anet[0] == pytest.approx(0.5)
    assert kit[0] == pytest.approx(1.0)


def test_overlap_must_be_strictly_above_the_threshold():
    anet, kit = both({"v": [("A", 0, 10)]}, {"v": [("A", 0.9, 0, 5)]}, [0.5, 0.4])  # overlap exactly 0.5
    np.testing.assert_allclose(anet, [1.0, 1.0])
    np.testing.assert_allclose(kit, [0.0, 1.0])


def test_detections_on_ambiguous_segments_are_ignored():
    # the 0.9 detection overlaps only an Ambiguous segment: FP for ActivityNet, ignored by the kit
    anet, kit = both({"v": [("A", 0, 10)]}, {"v": [("A", 0.9, 21, 24), ("A", 0.5, 0, 10)]}, [0.5],
                     ambiguous={"v": [(20.0, 25.0)]})
    assert anet[0] == pytest.approx(0.5)
    assert kit[0] == pytest.approx(1.0)
    # a detection that merely touches the Ambiguous segment (no intersection) is still a FP
    _, kit = both({"v": [("A", 0, 10)]}, {"v": [("A", 0.9, 25, 30), ("A", 0.5, 0, 10)]}, [0.5],
                  ambiguous={"v": [(20.0, 25.0)]})
    assert kit[0] == pytest.approx(0.5)


def test_ap_is_not_interpolated():
    # FP TP TP with 2 ground truths: kit (1/2 + 2/3) / 2; ActivityNet interpolates to 2/3
    anet, kit = both({"v": [("A", 0, 10), ("A", 20, 30)]},
                     {"v": [("A", 0.9, 40, 50), ("A", 0.8, 0, 10), ("A", 0.7, 20, 30)]}, [0.5])
    assert kit[0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert anet[0] == pytest.approx(2 / 3)


def test_equal_confidence_across_videos_follows_video_id_order():
    # a FP in video "a" and a TP in video "b" share confidence 0.8: the kit ranks "a" first,
    # whichever comes first in the file -> FP TP -> AP 1/2
    anet, kit = both({"b": [("A", 0, 10)], "a": [("B", 0, 1)]}, {"a": [("A", 0.8, 0, 10)], "b": [("A", 0.8, 0, 10)]}, [0.5])
    assert kit[0] == pytest.approx(0.5)
    assert anet[0] == pytest.approx(1.0)  # later-in-file first: b's TP, then a's FP
    anet2, kit2 = both({"b": [("A", 0, 10)], "a": [("B", 0, 1)]}, {"b": [("A", 0.8, 0, 10)], "a": [("A", 0.8, 0, 10)]}, [0.5])
    assert kit2[0] == pytest.approx(0.5)
    assert anet2[0] == pytest.approx(0.5)  # now a's FP is later in the file, so it comes first


def test_equal_confidence_within_a_video_keeps_file_order():
    # one video, two ground truths; a FP and a TP tie at 0.8, a second TP at 0.5
    gt = {"v": [("A", 0, 10), ("A", 20, 30)]}
    _, kit = both(gt, {"v": [("A", 0.8, 40, 50), ("A", 0.8, 0, 10), ("A", 0.5, 20, 30)]}, [0.5])
    assert kit[0] == pytest.approx((1 / 2 + 2 / 3) / 2)  # FP TP TP
    _, kit = both(gt, {"v": [("A", 0.8, 0, 10), ("A", 0.8, 40, 50), ("A", 0.5, 20, 30)]}, [0.5])
    assert kit[0] == pytest.approx((1 + 2 / 3) / 2)  # TP FP TP
    # a lower confidence listed first moves behind both, the tie keeps its file order
    _, kit = both(gt, {"v": [("A", 0.5, 20, 30), ("A", 0.8, 40, 50), ("A", 0.8, 0, 10)]}, [0.5])
    assert kit[0] == pytest.approx((1 / 2 + 2 / 3) / 2)  # FP TP TP


def test_equal_confidence_across_videos_whose_ids_sort_differently_from_file_order():
    # ground truth lists v2 before v10, and so does the results file; sorted ids put "v10" first.
    gt = {"v2": [("A", 0, 10)], "v10": [("A", 0, 10)]}
    preds = {"v2": [("A", 0.8, 0, 10), ("A", 0.8, 40, 50)],      # TP FP
             "v10": [("A", 0.8, 40, 50), ("A", 0.8, 0, 10)]}     # FP TP
    _, kit = both(gt, preds, [0.5])
    # v10 then v2: FP TP TP FP -> (1/2 + 2/3) / 2 (file or ground-truth order: TP FP FP TP -> 3/4;
    # true positives first: 1)
    assert kit[0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # the results file's video order does not matter
    _, kit_swapped = both(gt, {"v10": preds["v10"], "v2": preds["v2"]}, [0.5])
    assert kit_swapped[0] == kit[0]


def test_equal_confidence_with_a_false_positive_on_an_ambiguous_segment():
    # ground truths [0,10] and [20,30], Ambiguous [10,14]; three detections tie at 0.8:
    # p0 [40,50] a FP, p1 [2,13] overlaps the first ground truth by 8/13 and the Ambiguous segment,
    # p2 [20,30] a TP.
    gt = {"v": [("A", 0, 10), ("A", 20, 30)]}
    preds = {"v": [("A", 0.8, 40, 50), ("A", 0.8, 2, 13), ("A", 0.8, 20, 30)]}
    _, kit = both(gt, preds, [0.5, 0.7], ambiguous={"v": [(10.0, 14.0)]})
    # 0.5: p1 is a TP -> FP TP TP; 0.7: p1 is free and touches Ambiguous, so dropped -> FP TP
    np.testing.assert_allclose(kit, [(1 / 2 + 2 / 3) / 2, (1 / 2) / 2])
    # across videos: a dropped detection in "a" takes no place before b's TP of equal confidence,
    # a plain FP there does
    gt2 = {"a": [("B", 0, 1)], "b": [("A", 0, 10)]}
    preds2 = {"a": [("A", 0.8, 21, 24)], "b": [("A", 0.8, 0, 10)]}
    _, kit = both(gt2, preds2, [0.5], ambiguous={"a": [(20.0, 25.0)]})
    assert kit[0] == pytest.approx(1.0)
    _, kit = both(gt2, preds2, [0.5], ambiguous={"a": [(25.0, 30.0)]})
    assert kit[0] == pytest.approx(0.5)


def test_kit_ap_does_not_depend_on_the_order_of_videos_in_the_file():
    rng = np.random.default_rng(3)
    for trial in range(20):
        gt, preds = {}, {}
        for v in range(6):
            name = f"video_test_{rng.integers(1, 10 ** 7):07d}"
            starts = rng.uniform(0, 90, 3)
            gt[name] = [("A" if rng.random() < 0.6 else "B", s, s + rng.uniform(1, 10)) for s in starts]
            preds[name] = [("A" if rng.random() < 0.6 else "B", float(rng.integers(1, 4)) / 4, s, s + rng.uniform(1, 10))
                           for s in rng.uniform(0, 90, 5)]
        amb = {name: [(50.0, 55.0)] for name in list(gt)[:2]}
        inputs = build_inputs(make_gt(gt, amb), "test", make_results(preds))
        names = list(preds)
        rng.shuffle(names)
        shuffled = build_inputs(make_gt(gt, amb), "test", make_results({n: preds[n] for n in names}))
        np.testing.assert_array_equal(thumos_kit.evaluate(inputs, [0.1, 0.5]), thumos_kit.evaluate(shuffled, [0.1, 0.5]))


def test_highest_confidence_wins_equal_overlap():
    # both detections overlap the ground truth equally; the kit gives it to the higher confidence
    _, kit = both({"v": [("A", 0, 10)]}, {"v": [("A", 0.5, 0, 10), ("A", 0.9, 0, 10)]}, [0.5])
    assert kit[0] == pytest.approx(1.0)


def test_kit_on_real_thumos14_test_subset():
    gt = load_ground_truth(DATA / "thumos14" / "annotations")
    part = gt.subset("test")
    results = {vid: [{"label": a["label"], "score": 1.0, "segment": a["segment"]} for a in v["annotations"]]
               for vid, v in part.database.items()}
    # plus one false detection on every ambiguous segment: the kit ignores all of them
    for vid, segs in part.ambiguous.items():
        results.setdefault(vid, []).extend({"label": "Diving", "score": 2.0, "segment": list(s)} for s in segs)
    inputs = build_inputs(gt, "test", results)
    kit = score(inputs, thumos_kit.THUMOS14_TIOU, "thumos14-kit", "test")
    anet = score(inputs, thumos_kit.THUMOS14_TIOU, "activitynet", "test")
    np.testing.assert_allclose(kit.mAP, 1.0)
    assert anet.ap[:, inputs.classes.index("Diving")].max() < 1.0
    assert kit.means() == pytest.approx({"0.1:0.5": 1.0, "0.3:0.7": 1.0, "0.1:0.7": 1.0})
