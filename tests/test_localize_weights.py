"""``clipae-localize --random-weights``: required exactly when the run's features were random."""

import numpy as np
import pytest

from clipae.cli import localize_main
from clipae.eval import localize
from clipae.models import run as trained_runs
from clipae.models.config import Config
from clipae.models.trained_on import TrainedOn

T = 20


class StandInRun:
    """A weakly-supervised run of one class whose T-CAM fires on snippets 5..9."""

    def __init__(self, weights):
        self.config = Config()
        self.classes = ["A"]
        self.extraction = TrainedOn.from_json({"fps": 25.0, "snippet_length": 16, "snippet_stride": 16,
                                               "streams": {"i3d_rgb": {"dim": 4}}, "weights": {"i3d_rgb": weights}})
        self.train_assignments = None

    def predict(self, features, has_audio):
        cas = features["i3d_rgb"][:, :1]
        return {"cas": cas, "attention": cas[:, 0], "video_scores": cas.max(axis=0)}


@pytest.fixture
def stand_ins(monkeypatch, tmp_path):
    """Model and extraction stages replaced by stand-ins; returns (set_run, options seen, video)."""
    seen = []

    def extract_video(path, streams, grid, options, frame_settings=None):
        seen.append(options)
        rgb = np.zeros((T, 4), np.float32)
        rgb[5:10, 0] = 1.0
        weights = "random" if options.random_weights else "sha256:ab"
        return ({"video_id": "v", "status": "ok", "fps": 25.0, "snippet_length": 16, "snippet_stride": 16,
                 "num_snippets": T, "duration_s": T * 0.64, "has_audio": True,
                 "streams": {"i3d_rgb": {}}, "weights": {"i3d_rgb": weights}}, {"i3d_rgb": rgb})

    holder = {}
    monkeypatch.setattr(trained_runs, "load_run", lambda p: holder["run"])
    monkeypatch.setattr(localize, "extract_video", extract_video)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"stand-in")
    return (lambda weights: holder.update(run=StandInRun(weights))), seen, video


def test_random_run_needs_the_flag(stand_ins, tmp_path, capsys):
    set_run, seen, video = stand_ins
    set_run("random")
    assert localize_main([str(video), "--run", str(tmp_path)]) == 2
    assert "pass --random-weights" in capsys.readouterr().err and not seen  # refused before extracting
    assert localize_main([str(video), "--run", str(tmp_path), "--random-weights"]) == 0
    captured = capsys.readouterr()
    assert "WARNING: --random-weights" in captured.err and seen[-1].random_weights is True
    assert "v.mp4: 12.80 s, 20 snippets" in captured.out and "    3.20     6.40  A" in captured.out


def test_flag_refused_for_a_pretrained_run(stand_ins, tmp_path, capsys):
    set_run, seen, video = stand_ins
    set_run("sha256:ab")
    assert localize_main([str(video), "--run", str(tmp_path), "--random-weights"]) == 2
    assert "made with pretrained weights" in capsys.readouterr().err and not seen
    assert localize_main([str(video), "--run", str(tmp_path)]) == 0
    assert seen[-1].random_weights is False


def test_the_video_is_extracted_at_clipae_extracts_default_batch_size(stand_ins, tmp_path):
    """On the CPU the run's streams give the batch (i3d_rgb: 2), as ``clipae-extract`` takes it."""
    from clipae.extractors.base import get_stream
    set_run, seen, video = stand_ins
    set_run("sha256:ab")
    assert localize_main([str(video), "--run", str(tmp_path), "--device", "cpu"]) == 0
    assert seen[-1].batch_size == get_stream("i3d_rgb").cpu_batch_size == 2
