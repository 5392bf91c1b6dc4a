"""clipae-bench extract runs end to end and prints every section (numbers are machine-dependent)."""
import os
import re
from pathlib import Path

import videogen
from clipae.bench.extract import main


def test_bench_extract_prints_each_section(tmp_path, capsys, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    videogen.make_video(videos / "a.mp4", duration=1.5)
    videogen.make_video(videos / "b.mp4", duration=0.7, audio=None)
    # the clipae-extract children must find the toy streams too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    assert main([str(videos), "--stream-module", "toy_streams", "--streams", "toy_colour,toy_rms",
                 "--memory-minutes", "", "--bench-batches", "1", "--decode-workers", "1",
                 "--variants=--decode-workers 0|--per-video-batches --decode-workers 1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"matmul 2048x2048 float32: [\d.]+ GFLOP/s", out)
    assert re.search(r"start-up after import: [\d.]+ s to the first batch's features \(\d+ snippets; networks built "
                     r"[\d.]+ s, first batch decoded [\d.]+ s, networks on it [\d.]+ s\)", out)
    assert re.search(r"snippet batches, thread: [\d.]+ s = [\d.]+x real time", out)
    assert re.search(r"snippet batches, 1 decoding process: [\d.]+ s", out)
    assert re.search(r"toy_colour: [\d.]+ snippets/s", out)
    assert "streams (batch size 4, first video):" in out  # the CPU default of clipae-extract, resolved
    runs = re.findall(r"clipae-extract end to end (.*): 2 ok, 0 failed.*\(exit 0\)", out)
    assert runs == ["--decode-workers 0", "--per-video-batches --decode-workers 1"]
