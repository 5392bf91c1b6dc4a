"""Ground-truth readers: every format of DESIGN.md, cross-checked on the same THUMOS14 videos."""
import collections
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clipae.cli import convert_gt_main
from clipae.datasets import annotations as ann
from clipae.datasets.annotations import AnnotationError, load_ground_truth

DATA = Path(__file__).parent / "data"
THUMOS = DATA / "thumos14"
FORMATS = {
    "thumos14-txt": THUMOS / "annotations",
    "basnet": THUMOS / "bas_net_gt.json",
    "actionformer": THUMOS / "actionformer_thumos14.json",
    "wtalc-npy": THUMOS / "wtalc_npy",
}


@pytest.fixture(scope="module")
def thumos():
    return {name: load_ground_truth(path) for name, path in FORMATS.items()}


def instances(gt, subset):
    return collections.Counter((vid, a["label"], round(a["segment"][0], 3), round(a["segment"][1], 3))
                               for vid, v in gt.subset(subset).database.items() for a in v["annotations"])


def test_each_thumos_format_is_detected_with_normalised_subsets(thumos):
    for name, gt in thumos.items():
        assert gt.source_format == name
        assert gt.subsets() == ["test", "validation"]  # BaS-Net "train", ActionFormer "Test"/"Validation"
        assert len(gt.classes) == 20
        assert gt.classes == (THUMOS / "classes.txt").read_text().split()


def test_thumos_test_subset_agrees_across_formats(thumos):
    txt = instances(thumos["thumos14-txt"], "test")
    assert sum(txt.values()) == 3358
    assert instances(thumos["wtalc-npy"], "test") == txt
    assert instances(thumos["actionformer"], "test") == txt
    # BaS-Net's gt.json drops two test videos, and nothing else.
    dropped = {"video_test_0000270", "video_test_0001496"}
    assert instances(thumos["basnet"], "test") == collections.Counter({k: n for k, n in txt.items() if k[0] not in dropped})
    # the validation subset (training set of the field) agrees in all four
    val = instances(thumos["thumos14-txt"], "validation")
    assert sum(val.values()) == 3007
    assert all(instances(gt, "validation") == val for gt in thumos.values())


def test_ambiguous_segments_and_ambiguous_only_video(thumos):
    txt, npy = thumos["thumos14-txt"], thumos["wtalc-npy"]
    test = txt.subset("test")
    assert sum(map(len, test.ambiguous.values())) == 99 and len(test.ambiguous) == 37
    assert test.ambiguous["video_test_0000278"][:2] == [(0.0, 1.4), (95.7, 97.2)]
    assert sum(map(len, txt.subset("validation").ambiguous.values())) == 89
    # a video with only Ambiguous segments is listed, with no annotation
    assert test.database["video_test_0001292"]["annotations"] == []
    assert npy.subset("test").ambiguous == test.ambiguous
    # ambiguous segments never become annotations
    assert all(a["label"] != "Ambiguous" for v in txt.database.values() for a in v["annotations"])


def test_durations_where_the_format_has_them(thumos):
    assert all(v["duration"] is None for v in thumos["thumos14-txt"].database.values())
    assert thumos["actionformer"].database["video_test_0000004"]["duration"] == 33.83
    assert thumos["wtalc-npy"].database["video_test_0000004"]["duration"] == pytest.approx(33.8253514)
    filled = thumos["thumos14-txt"].with_durations(ann.load_durations(FORMATS["actionformer"]))
    assert filled.database["video_test_0000004"]["duration"] == 33.83
    assert filled.database["video_test_0001292"]["duration"] is None  # ActionFormer lacks that video


def test_txt_single_subset_folder_and_detclasslist(tmp_path):
    gt = load_ground_truth(THUMOS / "annotations" / "val")
    assert gt.subsets() == ["validation"] and gt.num_instances() == 3007
    folder = tmp_path / "val"
    shutil.copytree(THUMOS / "annotations" / "val", folder)
    (folder / "Diving_val.txt").unlink()
    with pytest.raises(AnnotationError, match="Diving_val.txt"):
        load_ground_truth(folder)


def test_activitynet_json_and_zero_length_segments():
    gt = load_ground_truth(DATA / "anet12" / "activity_net.v1-2.json")
    assert gt.source_format == "activitynet"
    assert len(gt.classes) == 100
    val = gt.subset("val")  # alias
    assert len(val.database) == 2383 and val.num_instances() == 3582
    zero = [a for v in gt.database.values() for a in v["annotations"] if a["segment"][0] == a["segment"][1]]
    assert len(zero) == 10  # kept: the evaluator counts them as unmatched ground truth


def test_v_prefix_maps_both_ways():
    assert ann.canonical_id("v_abc", {"abc"}) == "abc"
    assert ann.canonical_id("abc", {"v_abc": 1}) == "v_abc"
    assert ann.canonical_id("x", {"abc"}) is None


def test_bad_files_get_one_line_errors(tmp_path):
    bad = tmp_path / "gt.json"
    bad.write_text(json.dumps({"version": "1", "database": {"a": {"subset": "test", "annotations": [
        {"label": "X", "segment": [5, 2]}]}}}))
    with pytest.raises(AnnotationError, match="ends before it starts"):
        load_ground_truth(bad)
    bad.write_text("{not json")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        load_ground_truth(bad)
    (tmp_path / "other.txt").write_text("hello")
    with pytest.raises(AnnotationError, match="unrecognised"):
        load_ground_truth(tmp_path / "other.txt")
    with pytest.raises(AnnotationError, match="no video in subset"):
        load_ground_truth(FORMATS["basnet"]).subset("training")


def test_convert_writes_activitynet_json_that_reads_back(tmp_path, capsys):
    out = tmp_path / "gt.json"
    assert convert_gt_main([str(FORMATS["thumos14-txt"]), "-o", str(out), "--durations", str(FORMATS["actionformer"])]) == 0
    assert "thumos14-txt" in capsys.readouterr().out
    obj = json.loads(out.read_text())
    assert set(obj) == {"version", "taxonomy", "database", "ambiguous"}
    back = load_ground_truth(out)
    assert back.source_format == "activitynet"
    assert instances(back, "test") == instances(load_ground_truth(FORMATS["thumos14-txt"]), "test")
    assert back.subset("test").ambiguous == load_ground_truth(FORMATS["thumos14-txt"]).subset("test").ambiguous
    assert back.database["video_test_0000004"]["duration"] == 33.83
    assert convert_gt_main([str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_wtalc_lengths_must_agree(tmp_path):
    folder = tmp_path / "npy"
    shutil.copytree(FORMATS["wtalc-npy"], folder)
    np.save(folder / "subset.npy", np.load(folder / "subset.npy", allow_pickle=True)[:-1])
    with pytest.raises(AnnotationError, match="differ in length"):
        load_ground_truth(folder)


def test_durations_from_a_manifest(tmp_path):
    from clipae.pipeline.manifest import append_record
    m = tmp_path / "manifest.jsonl"
    append_record(m, {"video_id": "video_test_0000004", "status": "ok", "duration_s": 33.8})
    append_record(m, {"video_id": "video_test_0000006", "status": "failed", "duration_s": 1.0})
    assert ann.load_durations(m) == {"video_test_0000004": 33.8}
    gt = load_ground_truth(FORMATS["thumos14-txt"]).with_durations(ann.load_durations(m))
    assert gt.database["video_test_0000004"]["duration"] == 33.8
    assert gt.database["video_test_0000006"]["duration"] is None
