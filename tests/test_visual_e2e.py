"""All four streams on the two sample videos through ``clipae-extract``, with random weights
(cheap settings: 1 fps, 2-frame snippets every 4 frames, raft_small with one update, one
CLIP frame)."""
import json

import numpy as np

from video_frames import VIDEOS

from clipae.cli import extract_main

DIMS = {"i3d_rgb": 1024, "i3d_flow": 1024, "clip": 512, "vggish": 128}


def test_all_four_streams_on_the_sample_videos(tmp_path):
    out = tmp_path / "out"
    rc = extract_main([str(VIDEOS), str(out), "--streams", ",".join(DIMS), "--random-weights", "--quiet",
                           "--device", "cpu", "--fps", "1", "--snippet-length", "2", "--snippet-stride", "4",
                           "--flow", "raft_small", "--raft-iters", "1", "--clip-model", "ViT-B-32",
                           "--clip-frames", "1", "--weights-dir", str(tmp_path / "weights")])
    assert rc == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["video_id"] for r in records) == ["v_GGSY1Qvo990", "v_ZNVhz7ctTq0"]
    for r in records:
        assert r["status"] == "ok" and r["num_snippets"] >= 4
        assert r["weights"] == {name: "random" for name in DIMS}
        for name, dim in DIMS.items():
            rows = np.load(out / r["streams"][name]["path"])
            assert rows.shape == (r["num_snippets"], dim) and np.isfinite(rows).all()
            if name != "vggish":  # visual rows differ from snippet to snippet
                assert np.abs(rows - rows[:1]).max() > 0
        clip = np.load(out / r["streams"]["clip"]["path"])
        np.testing.assert_allclose(np.linalg.norm(clip, axis=1), 1.0, rtol=1e-5)
        assert r["streams"]["i3d_flow"]["settings"]["flow"] == "raft_small"
