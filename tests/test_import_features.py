"""Importing the public I3D features (W-TALC joint array, CoLA / BaS-Net rgb/ + flow/ files)."""
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from clipae.cli import import_features_main as main
from clipae.pipeline import manifest as mf
from clipae.core.grid import SnippetGrid

GRID = SnippetGrid(25, 16, 16)


def _rows(duration):
    return GRID.num_snippets(GRID.num_frames(duration))


def _features(rows, seed):
    """(rows, 2048) with RGB columns positive and flow columns negative, so a swap is visible."""
    x = np.random.default_rng(seed).uniform(0.1, 1.0, (rows, 2048)).astype(np.float32)
    x[:, 1024:] *= -1
    return x


@pytest.fixture
def wtalc(tmp_path):
    """A W-TALC joint array of three videos; the second has one row fewer than the grid gives."""
    names = np.array([b"video_validation_0000001", b"video_validation_0000002", b"video_test_0000003"])
    durations = np.array([[10.0], [7.3], [4.12]])
    ann = tmp_path / "ann"
    ann.mkdir()
    np.save(ann / "videoname.npy", names)
    np.save(ann / "duration.npy", durations)
    np.save(ann / "original_fps.npy", np.array([30.0, 30.0, 29.97]))
    joint = np.empty(3, dtype=object)
    for i, d in enumerate(durations[:, 0]):
        joint[i] = _features(_rows(d) - (i == 1), i)
    np.save(tmp_path / "Thumos14reduced-I3D-JOINTFeatures.npy", joint, allow_pickle=True)
    return tmp_path / "Thumos14reduced-I3D-JOINTFeatures.npy", ann, joint, [n.decode() for n in names]


def test_wtalc_import_splits_rgb_then_flow_and_reports_the_mismatch(wtalc, tmp_path, capsys):
    path, ann, joint, names = wtalc
    out = tmp_path / "out"
    assert main(["wtalc", str(path), str(out), "--annotations", str(ann), "--quiet"]) == 1
    printed = capsys.readouterr().out
    # the mismatch is named per video, with both row counts, and counted in the summary;
    # 7.3 s at 25 fps = 183 frames -> ceil((183 - 16) / 16) + 1 = 12 rows expected, 11 imported
    assert "video_validation_0000002: failed: grid mismatch: 11 rows, the grid expects 12" in printed
    assert "failed: 1 (grid mismatch: 1" in printed and "-1: 1" in printed
    recs = mf.read_manifest(out / "manifest.jsonl")
    assert recs["video_validation_0000002"]["status"] == "failed"
    assert "11 rows" in recs["video_validation_0000002"]["error"]
    for i in (0, 2):
        rec = recs[names[i]]
        assert rec["status"] == "ok" and rec["num_snippets"] == len(joint[i]) == _rows(rec["duration_s"])
        assert (rec["fps"], rec["snippet_length"], rec["snippet_stride"]) == (25.0, 16, 16)
        assert rec["weights"] == {"i3d_rgb": "imported", "i3d_flow": "imported"} and rec["config_hash"]
        assert rec["native_fps"] == [30.0, 30.0, 29.97][i]
        for name in ("i3d_rgb", "i3d_flow"):
            entry = rec["streams"][name]
            assert entry["dim"] == 1024 and entry["dtype"] == "float32"
            assert entry["settings"]["source"] == "imported wtalc"
        rgb = mf.load_stream(out / "manifest.jsonl", rec, "i3d_rgb")
        flow = mf.load_stream(out / "manifest.jsonl", rec, "i3d_flow")
        np.testing.assert_array_equal(rgb, joint[i][:, :1024])
        np.testing.assert_array_equal(flow, joint[i][:, 1024:])
        assert (rgb > 0).all() and (flow < 0).all()


def test_adjust_rows_pads_only_when_asked(wtalc, tmp_path, capsys):
    path, ann, joint, names = wtalc
    out = tmp_path / "out"
    assert main(["wtalc", str(path), str(out), "--annotations", str(ann), "--adjust-rows", "1", "--quiet"]) == 0
    assert "video_validation_0000002: adjusted: 11 rows, the grid expects 12" in capsys.readouterr().out
    rec = mf.read_manifest(out / "manifest.jsonl")["video_validation_0000002"]
    rgb = mf.load_stream(out / "manifest.jsonl", rec, "i3d_rgb")
    assert rec["status"] == "ok" and len(rgb) == rec["num_snippets"] == 12
    np.testing.assert_array_equal(rgb[:11], joint[1][:, :1024])
    np.testing.assert_array_equal(rgb[11], joint[1][-1, :1024])  # padded with the last row
    assert rec["streams"]["i3d_rgb"]["settings"]["rows_adjusted"] == [11, 12]


def test_rerun_keeps_streams_added_later(wtalc, tmp_path, capsys):
    path, ann, _, names = wtalc
    out = tmp_path / "out"
    args = ["wtalc", str(path), str(out), "--annotations", str(ann), "--adjust-rows", "1", "--quiet"]
    assert main(args) == 0
    manifest = out / "manifest.jsonl"
    # extraction adds a stream on the same grid to an imported record
    rec = mf.read_manifest(manifest)[names[0]]
    rec["streams"]["clip"] = {"path": f"features/clip/{names[0]}.npy", "dim": 512, "dtype": "float32"}
    rec["weights"]["clip"] = "random"
    mf.append_record(manifest, rec)
    lines = manifest.read_text().count("\n")
    assert main(args) == 0
    assert manifest.read_text().count("\n") == lines  # nothing new to import
    assert "already imported, unchanged: 3" in capsys.readouterr().out
    assert main(args + ["--overwrite"]) == 0
    again = mf.read_manifest(manifest)[names[0]]
    assert again["streams"]["clip"] == rec["streams"]["clip"] and again["weights"]["clip"] == "random"


def test_rgb_flow_layout_with_durations_from_json(tmp_path, capsys):
    feats = tmp_path / "features"
    durations = {"video_validation_0000010": 5.0, "video_validation_0000011": 6.0,
                 "video_test_0000020": 3.2, "video_test_0000021": 4.0}
    split = {"video_validation_0000010": "train", "video_validation_0000011": "train",
             "video_test_0000020": "test", "video_test_0000021": "test"}
    arrays = {}
    for i, (vid, d) in enumerate(durations.items()):
        extra = 3 if vid == "video_test_0000020" else 0  # off by +3: beyond --adjust-rows 1
        arrays[vid] = _features(_rows(d) + extra, 10 + i)
        for stream, cols in (("rgb", slice(0, 1024)), ("flow", slice(1024, 2048))):
            if vid == "video_validation_0000011" and stream == "flow":
                continue  # a missing flow file
            (feats / split[vid] / stream).mkdir(parents=True, exist_ok=True)
            np.save(feats / split[vid] / stream / f"{vid}.npy", arrays[vid][:, cols])
    gt = {"version": "", "taxonomy": [], "database": {v: {"subset": s, "duration": durations[v], "annotations": []}
                                                       for v, s in split.items()}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    out = tmp_path / "out"
    rc = main(["rgb-flow", str(feats), str(out), "--annotations", str(tmp_path / "gt.json"), "--adjust-rows", "1", "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 1
    # 3.2 s = 80 frames -> ceil(64 / 16) + 1 = 5 rows expected, 8 imported
    assert "video_test_0000020: failed: grid mismatch: 8 rows, the grid expects 5" in printed
    assert "video_validation_0000011: failed: cannot read" in printed
    assert "failed: 2 (grid mismatch: 1, other: 1)" in printed
    recs = mf.read_manifest(out / "manifest.jsonl")
    assert sorted(v for v, r in recs.items() if r["status"] == "ok") == ["video_test_0000021", "video_validation_0000010"]
    rec = recs["video_test_0000021"]
    assert rec["streams"]["i3d_flow"]["settings"] == {
        "source": "imported rgb-flow", "file": "test/flow/video_test_0000021.npy", "weights_id": "imported",
        "sha256": hashlib.sha256((feats / "test" / "flow" / "video_test_0000021.npy").read_bytes()).hexdigest()}
    np.testing.assert_array_equal(mf.load_stream(out / "manifest.jsonl", rec, "i3d_flow"),
                                  arrays["video_test_0000021"][:, 1024:])


def test_durations_from_the_videos(tmp_path, capsys):
    from clipae.demo import data as dd

    spec = dd.DemoDatasetSpec(num_train=1, num_test=1, duration_s=(2.0, 2.5), instances=(1, 1),
                              instance_s=(0.5, 0.8), min_gap_s=0.4)
    data = dd.build_dataset(tmp_path / "demo", spec)
    plan = data.plans[0]
    # ActivityNet style: the file is v_<id>.mp4, the features are named <id>
    video = data.videos / f"v_{plan.video_id}.mp4"
    data.video_path(plan.video_id).rename(video)
    feats = tmp_path / "features" / "rgb"
    feats.mkdir(parents=True)
    (tmp_path / "features" / "flow").mkdir()
    rows = _rows(plan.duration_s(spec.fps))
    for stream in ("rgb", "flow"):
        np.save(tmp_path / "features" / stream / f"{plan.video_id}.npy", np.ones((rows, 1024), np.float32))
    out = tmp_path / "out"
    assert main(["rgb-flow", str(tmp_path / "features"), str(out), "--videos", str(data.videos), "--quiet"]) == 0
    rec = mf.read_manifest(out / "manifest.jsonl")[f"v_{plan.video_id}"]  # named after the file, as extraction names it
    assert rec["source"] == str(video) and rec["streams"]["i3d_rgb"]["path"] == f"features/i3d_rgb/v_{plan.video_id}.npy"
    assert rec["duration_s"] == pytest.approx(plan.duration_s(spec.fps), abs=0.05)
    assert rec["native_fps"] == 25.0 and rec["num_frames"] == plan.num_frames


def test_bad_input_is_one_line_without_traceback(wtalc, tmp_path, capsys):
    path, ann, _, _ = wtalc
    np.save(ann / "videoname.npy", np.array([b"a", b"b"]))  # names no longer match the rows
    np.save(ann / "duration.npy", np.array([[1.0], [2.0]]))
    np.save(ann / "original_fps.npy", np.array([25.0, 25.0]))
    r = subprocess.run([sys.executable, "-m", "clipae", "import-features", "wtalc", str(path),
                        str(tmp_path / "out"), "--annotations", str(ann)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "must match one to one" in r.stderr
    assert main(["wtalc", str(path), str(tmp_path / "out")]) == 2
    assert "needs --annotations" in capsys.readouterr().err


def test_extraction_adds_a_stream_to_imported_videos(tmp_path):
    from clipae.demo import data as dd
    from clipae.cli import extract_main

    spec = dd.DemoDatasetSpec(num_train=1, num_test=1, duration_s=(2.0, 2.5), instances=(1, 1),
                              instance_s=(0.5, 0.8), min_gap_s=0.4)
    data = dd.build_dataset(tmp_path / "demo", spec)
    for plan in data.plans:
        for stream in ("rgb", "flow"):
            (tmp_path / "features" / stream).mkdir(parents=True, exist_ok=True)
            np.save(tmp_path / "features" / stream / f"{plan.video_id}.npy",
                    _features(_rows(plan.duration_s(spec.fps)), 0)[:, :1024])
    out = tmp_path / "out"
    assert main(["rgb-flow", str(tmp_path / "features"), str(out), "--videos", str(data.videos), "--quiet"]) == 0
    assert extract_main([str(data.videos), str(out), "--streams", "vggish", "--random-weights", "--quiet"]) == 0
    for vid, rec in mf.read_manifest(out / "manifest.jsonl").items():
        assert rec["status"] == "ok" and set(rec["streams"]) == {"i3d_rgb", "i3d_flow", "vggish"}
        assert rec["weights"] == {"i3d_rgb": "imported", "i3d_flow": "imported", "vggish": "random"}
        assert mf.load_stream(out / "manifest.jsonl", rec, "vggish").shape == (rec["num_snippets"], 128)
        np.testing.assert_array_equal(mf.load_stream(out / "manifest.jsonl", rec, "i3d_rgb"),
                                      np.load(tmp_path / "features" / "rgb" / f"{vid}.npy"))
