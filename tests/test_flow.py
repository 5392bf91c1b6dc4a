"""Flow for the i3d_flow stream: clipping and scaling, one field per frame with the last pair
reaching into the next snippet, RAFT weights and padding, TV-L1's optional dependency and, where
OpenCV's contrib modules are installed, TV-L1 itself on a known translation."""
import argparse
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights, raft_small

from clipae.extractors import flow as fl
from clipae.extractors.base import ExtractorOptions, OptionsError, get_stream
from clipae.core.weights import WeightsError
from video_frames import decode_frames, snippet_batch


def test_flow_is_clipped_to_20_pixels_and_scaled_to_unit_range():
    f = torch.tensor([-35.0, -20.0, -10.0, 0.0, 5.0, 19.0, 20.0, 60.0])
    assert fl.scale_flow(f).tolist() == pytest.approx([-1, -1, -0.5, 0, 0.25, 0.95, 1, 1])
    q = fl.scale_flow(f, quantize=True)
    levels = (q + 1) * 255 / 2  # back on the 0..255 grid of JPEG-stored flow
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels[[0, 1, 6, 7]].round().tolist() == [0, 0, 255, 255]
    assert levels[3].round().item() == 128  # 0 px -> 127.5 rounds to 128 (half to even)
    assert (q - fl.scale_flow(f)).abs().max() <= 1 / 255 + 1e-6


class IdentityFlow(fl.FlowEstimator):
    """x = the first frame's value, y = the second's, plus the column index in x (to see the crop)."""

    name = "identity"

    def __call__(self, first, second):
        n, h, w = first.shape[:3]
        x = first[..., 0].float() * 1000 + torch.arange(w).float()
        return torch.stack([x, second[..., 0].float()], dim=1)


def test_each_snippet_gets_one_field_per_frame_and_the_last_one_repeats():
    frames = np.zeros((11, 8, 303, 3), dtype=np.uint8)  # 11 frames, frame k has value k
    frames += np.arange(11, dtype=np.uint8)[:, None, None, None]
    batch = snippet_batch(frames, 4)  # snippets [0..3], [4..7]; frame 8 follows the second
    assert batch.has_next.tolist() == [True, True]
    fields = fl.snippet_flow(IdentityFlow(), batch.frames, batch.next_frames, batch.has_next, 8, torch.device("cpu"))
    assert fields.shape == (2, 2, 4, 8, 8)  # (B, xy, L, crop, crop)
    assert (fields[:, 0] // 1000).flatten(2)[..., 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert fields[:, 1].flatten(2)[..., 0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    # the frames' centre crop: 295 / 2 rounds to column 148, as torchvision's CenterCrop does
    assert fields[0, 0, 0, 0, 0] % 1000 == 148

    end = snippet_batch(frames[:8], 4)  # the video ends with the second snippet
    assert end.has_next.tolist() == [True, False]
    fields = fl.snippet_flow(IdentityFlow(), end.frames, end.next_frames, end.has_next, 8, torch.device("cpu"))
    assert fields[:, 1].flatten(2)[..., 0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 7]]  # 6->7 repeated
    torch.testing.assert_close(fields[1, :, 3], fields[1, :, 2])


def test_raft_specs_are_torchvisions_default_weights():
    for name, weights in (("raft_large", Raft_Large_Weights.DEFAULT), ("raft_small", Raft_Small_Weights.DEFAULT)):
        spec = fl.RAFT_WEIGHTS[name]
        assert spec.url == weights.url and weights.url.endswith(spec.filename)
        assert spec.filename.rsplit("-", 1)[1] == spec.sha256 + ".pth"  # torch.hub's sha256 prefix


def test_raft_loads_a_torchvision_checkpoint_and_pads_to_a_multiple_of_8(tmp_path):
    torch.manual_seed(0)
    net = raft_small()
    torch.save(net.state_dict(), tmp_path / "raft_small.pth")
    options = fl.FlowOptions(flow="raft_small", raft_iters=2)
    est = fl.build_flow(options, torch.device("cpu"), str(tmp_path / "raft_small.pth"))
    assert est.weights_id.startswith("sha256:") and est.settings()["raft_iters"] == 2
    frames = torch.from_numpy(decode_frames(2, short_side=130))  # (2, 130, 173, 3): neither a multiple of 8
    out = est(frames[:1], frames[1:])
    assert out.shape == (1, 2, 130, 173)
    # the same as torchvision's RAFT on the replicate-padded pair (to 136 x 176), cropped back
    x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1
    x = torch.nn.functional.pad(x, (1, 2, 3, 3), mode="replicate")
    with torch.no_grad():
        ref = net.eval()(x[:1], x[1:], num_flow_updates=2)[-1][:, :, 3:133, 1:174]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)

    torch.save({k: v for k, v in net.state_dict().items() if "update_block" not in k}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="missing"):
        fl.build_flow(fl.FlowOptions(flow="raft_small"), torch.device("cpu"), str(tmp_path / "bad.pth"))


def test_tvl1_without_opencv_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ModuleNotFoundError
    with pytest.raises(OptionsError, match=r"pip install 'clipae\[tvl1\]'"):
        fl.build_flow(fl.FlowOptions(flow="tvl1"), torch.device("cpu"))
    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__="4.10.0"))  # no contrib
    with pytest.raises(OptionsError, match="no contrib 'optflow'"):
        fl.build_flow(fl.FlowOptions(flow="tvl1"), torch.device("cpu"))

    class BrokenOpenCV:  # how OpenCV 4.9 and older, built for numpy 1, fail to import under numpy 2
        def find_spec(self, name, path=None, target=None):
            if name == "cv2":
                raise ImportError("numpy.core.multiarray failed to import\nmore lines")

    monkeypatch.delitem(sys.modules, "cv2")
    monkeypatch.setattr(sys, "meta_path", [BrokenOpenCV(), *sys.meta_path])
    with pytest.raises(OptionsError, match=r"^[^\n]*multiarray failed to import\): pip install 'clipae\[tvl1\]'"):
        fl.build_flow(fl.FlowOptions(flow="tvl1"), torch.device("cpu"))


def test_tvl1_feeds_grayscale_frames_and_returns_x_then_y(monkeypatch):
    class DualTVL1:
        def calc(self, a, b, _):
            return np.stack([a.astype(np.float32), -b.astype(np.float32)], axis=-1)  # (H, W, 2)

    cv2 = types.SimpleNamespace(__version__="4.10.0", COLOR_RGB2GRAY=7,
                                cvtColor=lambda img, code: img[..., 1].copy(),  # green as "gray"
                                optflow=types.SimpleNamespace(DualTVL1OpticalFlow_create=DualTVL1))
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    est = fl.build_flow(fl.FlowOptions(flow="tvl1"), torch.device("cpu"))
    a = torch.zeros(2, 4, 5, 3, dtype=torch.uint8)
    a[..., 1] = 9
    out = est(a, a + 1)
    assert out.shape == (2, 2, 4, 5) and out[:, 0].unique().tolist() == [9] and out[:, 1].unique().tolist() == [-10]


def translated_frames(shifts: list[tuple[int, int]], size: int = 64, margin: int = 16) -> np.ndarray:
    """``(len(shifts), size, size, 3)`` uint8 views of one smooth random RGB texture; in view ``k``
    the texture sits ``shifts[k] = (dx, dy)`` pixels right and down of where it is in a view with
    shift (0, 0)."""
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.random((3, size + 2 * margin, size + 2 * margin), dtype=np.float32))
    blur = torch.exp(-torch.arange(-6, 7.0) ** 2 / (2 * 2.0 ** 2))  # Gaussian, sigma 2 px
    kernel = (blur[:, None] * blur[None, :] / blur.sum() ** 2).expand(3, 1, 13, 13)
    texture = F.conv2d(noise[None], kernel, padding=6, groups=3)[0]
    lo, hi = texture.amin(dim=(1, 2), keepdim=True), texture.amax(dim=(1, 2), keepdim=True)
    texture = ((texture - lo) / (hi - lo) * 255).round().byte().permute(1, 2, 0).numpy()
    return np.stack([texture[margin - dy:margin - dy + size, margin - dx:margin - dx + size] for dx, dy in shifts])


def test_tvl1_with_opencv_finds_a_known_translation():
    pytest.importorskip("cv2.optflow", reason="OpenCV's contrib modules (clipae[tvl1]) are not installed")
    cpu = torch.device("cpu")
    est = fl.build_flow(fl.FlowOptions(flow="tvl1"), cpu)
    frames = torch.from_numpy(translated_frames([(0, 0), (3, -2)]))  # 3 px right, 2 px up
    out = est(frames[[0, 1]], frames[[1, 0]])  # the pair both ways
    assert out.shape == (2, 2, 64, 64) and out.dtype == torch.float32
    interior = out[..., 8:-8, 8:-8].mean(dim=(2, 3))  # (pair, xy)
    torch.testing.assert_close(interior, torch.tensor([[3.0, -2.0], [-3.0, 2.0]]), rtol=0, atol=0.1)

    # through the snippet code: one snippet of 2 frames and the frame that follows it
    moving = translated_frames([(0, 0), (3, -2), (6, -4)])
    fields = fl.snippet_flow(est, moving[None, :2], moving[None, 2], np.array([True]), 32, cpu)
    assert fields.shape == (1, 2, 2, 32, 32)  # (B, xy, L, crop, crop)
    torch.testing.assert_close(fields.mean(dim=(3, 4)), torch.tensor([[[3.0, 3.0], [-2.0, -2.0]]]),
                               rtol=0, atol=0.1)


def test_i3d_flow_stream_options_and_batch_independence():
    parser = argparse.ArgumentParser()
    get_stream("i3d_flow").add_arguments(parser.add_argument_group("i3d_flow stream"))
    args = parser.parse_args(["--flow", "raft_small", "--raft-iters", "2", "--flow-quantize"])
    with pytest.raises(OptionsError, match="--weights raft_large=... is not used with --flow raft_small"):
        get_stream("i3d_flow")(ExtractorOptions(weights_paths={"raft_large": "x.pth"}, extra=vars(args)))
    stream = get_stream("i3d_flow")(ExtractorOptions(random_weights=True, extra=vars(args)))
    stream.crop = 64
    s = stream.settings()
    assert (s["flow"], s["raft_iters"], s["flow_quantize"], s["flow_weights"]) == ("raft_small", 2, True, "random")
    batch = snippet_batch(decode_frames(7, short_side=128), 3)  # 2 snippets of 3 frames, frame 6 follows
    rows = stream(batch)
    assert rows.shape == (2, 1024) and np.isfinite(rows).all()
    for i in range(2):  # one snippet at a time: the same rows
        one = type(batch)(index=batch.index[i:i + 1], frames=batch.frames[i:i + 1],
                          next_frames=batch.next_frames[i:i + 1], has_next=batch.has_next[i:i + 1])
        np.testing.assert_allclose(stream(one)[0], rows[i], rtol=1e-4, atol=1e-5)
