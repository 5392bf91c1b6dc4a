"""clipae-bench streams: every stream (vggish too), the I3D FLOP count, JSON rows, bad input."""
import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from clipae.bench.streams import frame_size, main, make_batch
from clipae.extractors.i3d import i3d


def test_batches_carry_audio_windows_when_asked():
    frames = np.zeros((9, 8, 12, 3), dtype=np.uint8)
    batch = make_batch(frames, 2, 4, audio_window=15600)
    assert batch.frames.shape == (2, 4, 8, 12, 3) and batch.next_frames.shape == (2, 8, 12, 3)
    assert batch.audio.shape == (2, 15600) and batch.audio.dtype == np.float32 and batch.audio.std() > 0.1
    assert make_batch(frames, 2, 4).audio is None


def test_i3d_counts_55_6_gflop_per_16_frame_224_snippet():
    net = i3d("rgb").to("meta")
    with FlopCounterMode(display=False) as counter:
        net.features(torch.zeros(1, 3, 16, 224, 224, device="meta"))
    assert counter.get_total_flops() / 1e9 == pytest.approx(55.6, abs=0.05)


def test_vggish_row_with_json(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["--streams", "vggish", "--device", "cpu", "--batch-size", "2", "--batches", "1", "--in-process",
                 "--frame-size", "32x24", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["stream"] == "vggish" and row["snippets_per_s"] > 0 and row["flop_per_snippet"] > 1e8
    assert row["x_real_time"] == pytest.approx(row["snippets_per_s"] * 16 / 25)
    assert row["matmul_fraction"] == pytest.approx(row["flop_per_s"] / row["matmul_flop_per_s"])
    assert 50 * 2**20 < row["peak_bytes"] < 64 * 2**30
    assert "vggish" in capsys.readouterr().out


def test_bad_input(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--frame-size", "big"])
    assert e.value.code == 2 and "--frame-size must be WxH" in capsys.readouterr().err
    assert main(["--streams", "no_such", "--device", "cpu", "--in-process", "--frame-size", "8x8"]) == 2
    assert "unknown stream 'no_such'" in capsys.readouterr().err
    assert frame_size("455x256") == (455, 256)


def test_profile_lists_the_operators_that_took_the_time(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["--streams", "vggish", "--device", "cpu", "--batch-size", "2", "--batches", "1", "--in-process",
                 "--frame-size", "32x24", "--profile", "3", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    ops = row["profile"]
    assert len(ops) == 3 and all(p["ms"] > 0 and 0 < p["share"] <= 1 and p["calls"] >= 1 for p in ops)
    assert ops[0]["ms"] >= ops[1]["ms"] >= ops[2]["ms"]
    assert any("conv" in p["op"] or "mm" in p["op"] or "linear" in p["op"] for p in ops)   # VGGish is convolutions
    printed = capsys.readouterr().out
    assert all(p["op"] in printed for p in ops)


def test_without_a_batch_size_each_stream_runs_at_clipae_extracts_batch(tmp_path, capsys):
    from clipae.extractors.base import get_stream
    out = tmp_path / "rows.json"
    assert main(["--streams", "vggish", "--device", "cpu", "--batches", "1", "--in-process",
                 "--frame-size", "32x24", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["batch_size"] == get_stream("vggish").cpu_batch_size == 16
    assert "vggish        16 " in capsys.readouterr().out


def test_flops_of_fused_attention_are_counted():
    from clipae.bench.measure import count_flops
    mha = torch.nn.MultiheadAttention(64, 4, batch_first=True).eval()
    x = torch.randn(2, 10, 64)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:   # the fused inference path: one operator
            mha(x, x, x, need_weights=False)
        counted = count_flops(lambda: mha(x, x, x, need_weights=False))
    projections = 2 * (2 * 10) * 64 * (3 * 64 + 64)    # QKV and output projections, 20 tokens
    assert counter.get_total_flops() < projections      # what the counter alone sees
    assert counted >= projections                       # (the CPU's fused softmax(QK^T)V has no formula)
    assert torch.backends.mha.get_fastpath_enabled()    # restored
