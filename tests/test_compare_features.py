"""``clipae-compare-features`` on generated features with known shifts, stride changes, dropped last
snippets and noise: smooth random signals sampled at the row centres of two snippet grids."""
import json
from pathlib import Path

import numpy as np
import pytest

from clipae.cli import compare_features_main as main
from clipae.pipeline import manifest as mf
from clipae.core.grid import SnippetGrid

DIM = 48
OURS = SnippetGrid(25.0, 16, 16)


def signal(times: np.ndarray, seed: int) -> np.ndarray:
    """(len(times), DIM) smooth positive features: a constant plus slow sines (periods 6-40 s)."""
    rng = np.random.default_rng(seed)
    periods = rng.uniform(6.0, 40.0, (8, 1))
    phases = rng.uniform(0, 2 * np.pi, (8, 1))
    mix = rng.normal(size=(8, DIM))
    waves = np.sin(2 * np.pi * times[None, :] / periods + phases)       # (8, T)
    return (1.5 + waves.T @ mix / 3).astype(np.float32)


def rows(grid: SnippetGrid, n: int, seed: int) -> np.ndarray:
    return signal(np.asarray(grid.centre_s(np.arange(n)), dtype=np.float64), seed)


def write(folder: Path, videos: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for vid, a in videos.items():
        np.save(folder / f"{vid}.npy", a)
    return folder


def run(capsys, ours, theirs, *flags):
    rc = main([str(ours), str(theirs), "--json", str(ours.parent / "report.json"), *flags])
    out = capsys.readouterr().out
    return rc, out, json.loads((ours.parent / "report.json").read_text())


def test_identical_features_match(tmp_path, capsys):
    videos = {f"video_{i}": rows(OURS, 60 + i, i) for i in range(3)}
    rc, out, report = run(capsys, write(tmp_path / "ours", videos), write(tmp_path / "theirs", videos))
    assert rc == 0 and report["agree"]
    assert "rows match with offset 0, mean cosine 1.000" in out
    assert "3 videos compared: 3 agree, 0 disagree" in out


def test_a_shift_is_found(tmp_path, capsys):
    ours = rows(OURS, 80, 1)
    rc, out, report = run(capsys, write(tmp_path / "ours", {"v": ours}), write(tmp_path / "theirs", {"v": ours[2:]}))
    [v] = report["videos"]
    assert rc == 1 and v["step"] == 1.0 and v["offset"] == 2.0 and v["mean_cosine"] > 0.999
    assert "shifted: their row 0 is our row +2" in out


def test_a_dropped_last_snippet_still_matches(tmp_path, capsys):
    ours = rows(OURS, 70, 2)
    rc, out, report = run(capsys, write(tmp_path / "ours", {"v": ours}), write(tmp_path / "theirs", {"v": ours[:-1]}))
    assert rc == 0
    assert "theirs have -1 rows (the last partial snippet dropped)" in out
    rc, out, _ = run(capsys, tmp_path / "ours", write(tmp_path / "t2", {"v": ours[:-3]}))
    assert rc == 1 and "more than 1 rows apart" in out


def test_a_finer_grid_is_recognised_as_a_preset(tmp_path, capsys):
    theirs_grid = SnippetGrid(30.0, 16, 4)
    duration = 60.0
    ours = rows(OURS, OURS.num_snippets(OURS.num_frames(duration)), 3)
    theirs = rows(theirs_grid, theirs_grid.num_snippets(theirs_grid.num_frames(duration)), 3)
    rc, out, report = run(capsys, write(tmp_path / "ours", {"v": ours}), write(tmp_path / "theirs", {"v": theirs}))
    [v] = report["videos"]
    assert rc == 1
    assert v["step"] == pytest.approx((4 / 30) / (16 / 25))
    assert v["mean_cosine"] > 0.99
    assert "theirs are at 30 fps stride 4" in out and "--preset actionformer-thumos14" in out


def test_noise_decides_against_the_threshold(tmp_path, capsys):
    ours = rows(OURS, 90, 4)
    rng = np.random.default_rng(0)
    small = ours + rng.normal(scale=0.02, size=ours.shape).astype(np.float32)
    big = ours + rng.normal(scale=1.5, size=ours.shape).astype(np.float32)
    rc, out, report = run(capsys, write(tmp_path / "ours", {"v": ours}), write(tmp_path / "small", {"v": small}))
    assert rc == 0 and report["videos"][0]["offset"] == 0
    rc, out, report = run(capsys, tmp_path / "ours", write(tmp_path / "big", {"v": big}))
    assert rc == 1 and "the features differ" in out and report["videos"][0]["mean_cosine"] < 0.95
    rc, _, _ = run(capsys, tmp_path / "ours", tmp_path / "big", "--threshold", "0.1")
    assert rc == 0


def test_a_manifest_against_a_wtalc_joint_array(tmp_path, capsys):
    out = tmp_path / "out"
    rgb, flow = rows(OURS, 40, 5)[:, :24], rows(OURS, 40, 6)[:, :24]
    for stream, a in (("i3d_rgb", rgb), ("i3d_flow", flow)):
        mf.save_array_atomic(out / f"features/{stream}/v_abc.npy", a)
    mf.append_record(out / mf.MANIFEST_NAME, {
        "video_id": "v_abc", "status": "ok", "num_snippets": 40, **OURS.as_dict(),
        "streams": {s: {"path": f"features/{s}/v_abc.npy", "dim": 24} for s in ("i3d_rgb", "i3d_flow")}})
    public = tmp_path / "public"
    public.mkdir()
    joint = np.empty(2, dtype=object)
    joint[0], joint[1] = np.concatenate([rgb, flow], 1)[:-1], np.zeros((5, 48), np.float32)
    np.save(public / "joint.npy", joint, allow_pickle=True)
    np.save(public / "videoname.npy", np.array([b"abc", b"other"], dtype=object), allow_pickle=True)
    assert main([str(out), str(public / "joint.npy"), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "1 videos compared: 1 agree" in text and "1 only in theirs" in text
    # the streams in the other order no longer match
    assert main([str(out), str(public / "joint.npy"), "--streams", "i3d_flow,i3d_rgb"]) == 1


def test_bad_inputs_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such file or folder" in err
    write(tmp_path / "a", {"x": rows(OURS, 10, 0)})
    write(tmp_path / "b", {"y": rows(OURS, 10, 0)})
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "no video is in both" in capsys.readouterr().err


def test_wide_rows_are_aligned_on_a_projection(tmp_path, capsys):
    ours = np.concatenate([rows(OURS, 50, s) for s in range(8)], axis=1)   # (50, 384)
    rc, out, report = run(capsys, write(tmp_path / "ours", {"v": ours}), write(tmp_path / "theirs", {"v": ours[1:]}))
    assert rc == 1 and report["videos"][0]["offset"] == 1.0 and report["videos"][0]["mean_cosine"] > 0.999
