"""``clipae-localize`` on a real sample video, with a tiny unsupervised run trained on both sample videos.

The chain is the user's: ``clipae-extract`` (all four streams, random weights, a light grid) →
``clipae-train`` (unsupervised, K = 2) → ``clipae-localize`` on the video file itself.
"""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clipae.pipeline import manifest as mf

VIDEOS = Path(__file__).parent / "data" / "videos"
VIDEO = VIDEOS / "v_ZNVhz7ctTq0.mp4"          # 14 s, with sound
# every stream CLIP-AE reads, at the cheapest settings: 1 fps, 2-frame snippets, one RAFT update, one CLIP frame
EXTRACT = ["--streams", "i3d_rgb,i3d_flow,clip,vggish", "--fps", "1", "--snippet-length", "2", "--snippet-stride", "2",
           "--flow", "raft_small", "--raft-iters", "1", "--clip-model", "ViT-B-32", "--clip-frames", "1",
           "--device", "cpu", "--random-weights", "--quiet"]
CLASSES = ("Juggling", "Cooking")             # invented labels
TRAIN_CONFIG = {
    "data": {"train_subset": "training", "test_subset": "validation", "num_segments": 4},
    "model": {"caf_dim": 16, "ccp_dim": 16, "hidden_dim": 32, "caf_stages": 1, "dropout": 0.5},
    "cluster": {"method": "kmeans", "num_clusters": 2},
    "train": {"mode": "unsupervised", "rounds": 1, "epochs_per_round": 2, "batch_size": 2, "lr": 1.0e-3,
              "device": "cpu"},
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_module(module: str, *args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{module} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def ground_truth(records: dict) -> dict:
    """ActivityNet-schema ground truth: both videos in the training subset, one invented action each."""
    database = {}
    for (vid, rec), label in zip(sorted(records.items()), CLASSES):
        d = rec["duration_s"]
        database[vid] = {"subset": "training", "duration": d,
                         "annotations": [{"segment": [round(0.2 * d, 2), round(0.7 * d, 2)], "label": label}]}
    return {"version": "VERSION 1.2", "database": database}


@pytest.mark.slow
def test_localize_a_real_video_with_a_tiny_trained_run(tmp_path):
    features = tmp_path / "features"
    run_module("clipae", "extract", VIDEOS, features, *EXTRACT)
    records = mf.read_manifest(features / "manifest.jsonl")
    assert sorted(records) == ["v_GGSY1Qvo990", "v_ZNVhz7ctTq0"]
    assert all(rec["status"] == "ok" for rec in records.values())

    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(ground_truth(records)), encoding="utf-8")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(TRAIN_CONFIG), encoding="utf-8")
    run = tmp_path / "run"
    run_module("clipae", "train", "--manifest", features / "manifest.jsonl", "--annotations", gt_path,
               "--out", run, "--config", config, "--quiet")
    assert (run / "checkpoint.pt").is_file()

    out, png = tmp_path / "out.json", tmp_path / "timeline.png"
    # an unsupervised run maps its clusters to classes once, from the training ground truth
    r = run_module("clipae", "localize", VIDEO, "--run", run, "-o", out, "--plot", png, "--random-weights",
                   "--annotations", gt_path)
    assert (run / "cluster_mapping.json").is_file()

    # stdout: the header with the snippet count, the proposals table, the latency of each stage
    vid = VIDEO.stem
    header = re.search(rf"^{re.escape(VIDEO.name)}: ([\d.]+) s, (\d+) snippets", r.stdout, re.M)
    assert header, r.stdout
    assert int(header.group(2)) == records[vid]["num_snippets"]        # the same grid as the extraction
    assert re.search(r"^\s+start\s+end\s+label\s+score\s+cluster$", r.stdout, re.M), r.stdout
    latency = [line for line in r.stdout.splitlines() if line.startswith("latency: ")]
    assert len(latency) == 1 and "total" in latency[0]
    assert "RANDOM" in r.stdout + r.stderr

    # the ActivityNet results json
    results = json.loads(out.read_text(encoding="utf-8"))
    assert set(results) >= {"version", "results", "external_data"}
    assert list(results["results"]) == [vid]
    entries = results["results"][vid]
    assert entries, "no proposal on the video"
    duration = records[vid]["duration_s"]
    for e in entries:
        start, end = e["segment"]
        assert 0.0 <= start < end <= duration + 1e-6, e
        assert math.isfinite(e["score"]), e
        assert e["label"] in CLASSES, e
        assert isinstance(e["cluster"], int) and 0 <= e["cluster"] < 2, e      # unsupervised: the cluster is kept

    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
