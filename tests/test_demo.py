"""``make demo``: the whole chain at reduced size, and what it says when a stage is missing."""
import json
import subprocess
import sys

import numpy as np
import pytest

from clipae.demo import run as demo
from clipae.pipeline import manifest as mf

def test_weights_are_real_only_when_all_are_cached(tmp_path):
    names = [spec.filename for spec in demo.EXTRACTION.weights()]
    assert len(names) == 5 and len(set(names)) == 5
    status = demo.weights_status(tmp_path)
    assert not status.real and sorted(status.missing) == sorted(names) and "RANDOM" in status.banner()
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    status = demo.weights_status(tmp_path)
    assert status.real and "pretrained" in status.banner() and "RANDOM" not in status.caption()


@pytest.mark.slow
def test_demo_chain_at_small_size(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "clipae.demo.run", "--out", str(out), "--size", "small",
                        "--weights-dir", str(tmp_path / "empty-cache"), "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    # random weights said plainly: once at the top, once in the table's caption
    assert lines[1].startswith("Weights: RANDOM") and r.stdout.count("Weights: RANDOM") == 1
    caption = next(i for i, line in enumerate(lines) if line.startswith("mAP (%) on the 2 testing videos"))
    assert "RANDOM weights" in lines[caption]
    tiou = [float(x) for x in lines[caption + 1].split()[1:-1]]
    maps = [float(x) for x in lines[caption + 2].split()[1:]]
    assert tiou == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]) and len(maps) == 8
    assert all(0.0 <= m <= 100.0 for m in maps)

    spec = demo.SIZES["small"].data
    gt = json.loads((out / "data" / "ground_truth.json").read_text())["database"]
    records = mf.read_manifest(out / "features" / "manifest.jsonl")
    assert set(records) == set(gt) and len(gt) == spec.num_train + spec.num_test
    for vid, rec in records.items():
        assert rec["status"] == "ok" and rec["has_audio"] is True
        assert set(demo.STREAMS) <= set(rec["streams"]) and set(rec["weights"].values()) == {"random"}
        for stream in demo.STREAMS:
            x = mf.load_stream(out / "features" / "manifest.jsonl", rec, stream)
            assert x.shape == (rec["num_snippets"], rec["streams"][stream]["dim"]) and np.isfinite(x).all()

    metrics = json.loads((out / "eval" / "map.json").read_text())
    assert metrics["mAP"] == pytest.approx([m / 100 for m in maps[:-1]], abs=6e-4)
    video = sorted(v for v, x in gt.items() if x["subset"] == "testing")[0]
    proposals = json.loads((out / "localize" / f"{video}.json").read_text())
    assert video in proposals["results"]
    for p in proposals["results"][video]:
        assert 0 <= p["segment"][0] < p["segment"][1] <= gt[video]["duration"] + 0.64
    assert (out / "localize" / f"{video}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # clipae-localize extracted the video again with the run's recorded options (grid, --flow,
    # --clip-model, ...): its proposals are clipae-eval's for the same video
    predicted = json.loads((out / "run-random-weights" / "predictions_testing.json").read_text())["results"][video]
    located = proposals["results"][video]
    assert len(located) == len(predicted) > 0
    for a, b in zip(sorted(located, key=lambda p: p["segment"]), sorted(predicted, key=lambda p: p["segment"])):
        assert a["label"] == b["label"] and a["segment"] == pytest.approx(b["segment"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-3)
    assert str(out / "run-random-weights") in r.stdout and str(out / "localize" / f"{video}.png") in r.stdout
