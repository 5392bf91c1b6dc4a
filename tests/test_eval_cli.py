"""``clipae-eval --predictions``: paper layouts, --json, bad input, and ``clipae-bench eval``."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipae.cli import eval_main
from clipae.eval.report import TiouError, parse_tious
from clipae.bench import cli as bench_cli
from clipae.datasets.annotations import load_ground_truth

DATA = Path(__file__).parent / "data"
THUMOS_TXT = DATA / "thumos14" / "annotations"
ANET = DATA / "anet12" / "activity_net.v1-2.json"


def shifted_results(gt_path, subset, shift=0.3):
    """Each instance predicted, shifted by ``shift`` of its length (so high tIoUs fail)."""
    part = load_ground_truth(gt_path).subset(subset)
    res = {}
    for n, (vid, v) in enumerate(part.database.items()):
        rows = []
        for a in v["annotations"]:
            s, e = a["segment"]
            if e == s:
                continue  # zero-length ground truth: no valid prediction can copy it
            d = e - s
            rows.append({"label": a["label"], "score": 0.5 + 0.5 * ((n * 7919) % 1000) / 1000,
                         "segment": [s + shift * d, e + shift * d]})
        res[vid] = rows
    return {"version": "t", "results": res, "external_data": {}}


@pytest.fixture()
def thumos_pred(tmp_path):
    p = tmp_path / "thumos.json"
    p.write_text(json.dumps(shifted_results(THUMOS_TXT, "test")))
    return p


def test_thumos_table_layout_and_json(thumos_pred, tmp_path, capsys):
    out = tmp_path / "scores.json"
    assert eval_main(["--predictions", str(thumos_pred), "--annotations", str(THUMOS_TXT),
                     "--json", str(out), "--per-class"]) == 0
    text = capsys.readouterr().out
    header = [line for line in text.splitlines() if "mAP@0.1" in line][0]
    assert header.split()[1:] == ["mAP@0.1", "mAP@0.2", "mAP@0.3", "mAP@0.4", "mAP@0.5", "mAP@0.6", "mAP@0.7",
                                  "avg(0.1:0.5)", "avg(0.3:0.7)", "avg(0.1:0.7)"]
    assert "subset test" in text and "HighJump" in text  # per-class rows
    scores = json.loads(out.read_text())
    assert scores["tiou"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    mAP = np.array(scores["mAP"])
    # shifted by 30% of their length: tIoU = 0.7 / 1.3 = 0.538 -> found up to 0.5, lost from 0.6
    np.testing.assert_allclose(mAP[:5], 1.0)
    np.testing.assert_allclose(mAP[5:], 0.0)
    assert scores["average"] == pytest.approx(mAP.mean())
    assert scores["means"] == pytest.approx({"0.1:0.5": 1.0, "0.3:0.7": 0.6, "0.1:0.7": 5 / 7})
    assert len(scores["per_class"]) == 20 and all(len(v) == 7 for v in scores["per_class"].values())


def test_activitynet_layout_and_default_subset(tmp_path, capsys):
    p = tmp_path / "anet.json"
    p.write_text(json.dumps(shifted_results(ANET, "validation", shift=0.1)))
    assert eval_main(["--predictions", str(p), "--annotations", str(ANET)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "subset validation" in lines[0]
    assert lines[1].split()[1:] == ["mAP@0.5", "mAP@0.75", "mAP@0.95", "avg(0.5:0.95)"]
    values = [float(x) for x in lines[2].split()[1:]]
    assert values[0] > 99 and values[2] == 0.0  # tIoU 0.9/1.1 = 0.82: kept at 0.75, lost at 0.95


def test_other_thresholds_and_kit_protocol(thumos_pred, capsys):
    assert eval_main(["--predictions", str(thumos_pred), "--annotations", str(THUMOS_TXT),
                     "--tiou", "0.5,0.6", "--protocol", "thumos14-kit"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["thumos14-kit", "mAP@0.5", "mAP@0.6", "avg"]
    assert [float(x) for x in lines[2].split()[1:]] == [100.0, 0.0, 50.0]


def bad_file(tmp_path, entry):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"results": {"video_test_0000004": [entry]}}))
    return p


@pytest.mark.parametrize("entry,message", [
    ({"label": "HighJump", "score": math.nan, "segment": [1, 2]}, "not a finite number"),
    ({"label": "HighJump", "score": 0.5, "segment": [2, 2]}, "start < end"),
    ({"label": "Juggling", "score": 0.5, "segment": [1, 2]}, "not a class"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, entry, message):
    assert eval_main(["--predictions", str(bad_file(tmp_path, entry)), "--annotations", str(THUMOS_TXT)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_errors_for_files_subsets_and_thresholds(tmp_path, thumos_pred, capsys):
    assert eval_main(["--predictions", str(tmp_path / "none.json"), "--annotations", str(THUMOS_TXT)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert eval_main(["--predictions", str(thumos_pred), "--annotations", str(THUMOS_TXT), "--subset", "validation"]) == 2
    assert "not in subset 'validation'" in capsys.readouterr().err
    assert eval_main(["--predictions", str(thumos_pred), "--annotations", str(THUMOS_TXT), "--tiou", "0.7:0.1:0.1"]) == 2
    assert "--tiou" in capsys.readouterr().err
    (tmp_path / "empty.json").write_text(json.dumps({"results": {}}))
    assert eval_main(["--predictions", str(tmp_path / "empty.json"), "--annotations", str(THUMOS_TXT)]) == 2
    assert "no predictions" in capsys.readouterr().err


def test_parse_tious():
    np.testing.assert_array_equal(parse_tious("0.1:0.7:0.1"), np.linspace(0.1, 0.7, 7))
    np.testing.assert_array_equal(parse_tious("0.5:0.95:0.05"), np.linspace(0.5, 0.95, 10))
    assert parse_tious("0.5,0.75").tolist() == [0.5, 0.75]
    with pytest.raises(TiouError):
        parse_tious("1.5")
    for text in ("0", "0,0.5", "0:0.5:0.1", "-0.1"):   # at 0 every prediction matches, overlapping or not
        with pytest.raises(TiouError, match=r"\(0, 1\]"):
            parse_tious(text)


def test_tiou_zero_and_json_into_a_missing_folder_are_one_line_errors(thumos_pred, tmp_path, capsys):
    base = ["--predictions", str(thumos_pred), "--annotations", str(THUMOS_TXT)]
    assert eval_main([*base, "--tiou", "0"]) == 2
    err = capsys.readouterr().err
    assert "--tiou" in err and err.count("\n") == 1 and "Traceback" not in err
    missing = tmp_path / "no" / "such" / "scores.json"
    assert eval_main([*base, "--json", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert err == f"clipae-eval: error: --json {missing}: no such folder {missing.parent}\n" and out == ""
    assert eval_main([*base, "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_runs_as_a_module(thumos_pred):
    proc = subprocess.run([sys.executable, "-m", "clipae", "eval", "--predictions", str(thumos_pred),
                           "--annotations", str(THUMOS_TXT), "--tiou", "0.5"], capture_output=True, text=True)
    assert proc.returncode == 0 and "100.00" in proc.stdout


def test_bench_eval_prints_both_timings(capsys):
    assert bench_cli.main(["eval", "--videos", "60", "--classes", "6", "--per-video", "12", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "720 predictions" in out and "per-prediction loop" in out
    assert "largest AP difference 0.00e+00" in out


def test_v_prefixed_ids_print_one_note_and_strict_ids_score_them_as_the_official_evaluator(tmp_path, capsys):
    obj = shifted_results(ANET, "validation", shift=0.1)
    obj["results"] = {"v_" + vid: rows for vid, rows in obj["results"].items()}
    p = tmp_path / "anet_v.json"
    p.write_text(json.dumps(obj))
    n_videos = sum(1 for rows in obj["results"].values() if rows)  # a video without predictions is not counted
    assert eval_main(["--predictions", str(p), "--annotations", str(ANET), "--json", str(tmp_path / "s.json")]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "'v_' prefix" in line]
    assert len(notes) == 1 and notes[0].startswith(f"note: {n_videos} predicted video ids matched")
    assert json.loads((tmp_path / "s.json").read_text())["mAP"][0] > 0.99
    # exact ids: an error by default, every prediction a false positive with --unknown-videos false-positive
    assert eval_main(["--predictions", str(p), "--annotations", str(ANET), "--strict-ids"]) == 2
    err = capsys.readouterr().err
    assert f"{n_videos} predicted videos are not in subset 'validation'" in err and err.count("\n") == 1
    assert eval_main(["--predictions", str(p), "--annotations", str(ANET), "--strict-ids",
                     "--unknown-videos", "false-positive", "--json", str(tmp_path / "strict.json")]) == 0
    assert "'v_' prefix" in capsys.readouterr().err
    strict = json.loads((tmp_path / "strict.json").read_text())
    assert strict["mAP"] == [0.0] * 10
