"""I3D: TensorFlow SAME padding, both checkpoint key formats, and the output against an
independent functional re-computation from the state dict."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipae.extractors.base import ExtractorOptions, get_stream
from clipae.extractors.i3d import MaxPool3dSame, i3d, load_i3d_weights, pad_same
from clipae.core.weights import WeightsError
from video_frames import decode_frames, snippet_batch


def tf_same_total(size, kernel, stride):
    """Total SAME padding, as piergiaj/pytorch-i3d's ``compute_pad`` writes it."""
    return max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)


# --- SAME padding ----------------------------------------------------------------------------------

def test_same_padding_puts_the_odd_pixel_after():
    # a length-4 signal, kernel 3 of ones, stride 2: TensorFlow pads (0, 1) -> [x0+x1+x2, x2+x3]
    x = torch.tensor([1.0, 10.0, 100.0, 1000.0]).view(1, 1, 1, 1, 4)
    y = F.conv3d(pad_same(x, (1, 1, 3), (1, 1, 2)), torch.ones(1, 1, 1, 1, 3), stride=(1, 1, 2))
    assert y.flatten().tolist() == [111.0, 1100.0]
    # kernel 7 stride 2 on an even size pads (2, 3), on an odd size (3, 3)
    assert pad_same(torch.zeros(1, 1, 1, 1, 8), (1, 1, 7), (1, 1, 2)).shape[-1] == 8 + 5
    assert pad_same(torch.zeros(1, 1, 1, 1, 9), (1, 1, 7), (1, 1, 2)).shape[-1] == 9 + 6


@pytest.mark.parametrize("t,h,w", [(16, 64, 64), (9, 65, 47), (5, 33, 38)])
def test_every_layer_has_same_output_shape(t, h, w):
    net = i3d("rgb")
    x = torch.zeros(1, 3, t, h, w)
    expected = [t, h, w]
    strides = {"Conv3d_1a_7x7": (2, 2, 2), "MaxPool3d_2a_3x3": (1, 2, 2), "MaxPool3d_3a_3x3": (1, 2, 2),
               "MaxPool3d_4a_3x3": (2, 2, 2), "MaxPool3d_5a_2x2": (2, 2, 2)}
    shapes = {}
    hooks = [getattr(net, n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, o.shape[2:]))
             for n in strides]
    with torch.no_grad():
        out = net.trunk(x)
    for h_ in hooks:
        h_.remove()
    for name, stride in strides.items():
        expected = [math.ceil(s / st) for s, st in zip(expected, stride)]
        assert list(shapes[name]) == expected, name
    assert out.shape[:2] == (1, 1024) and list(out.shape[2:]) == expected


def test_unit3d_pads_exactly_tensorflow_same_in_every_dimension():
    net = i3d("rgb")
    x = torch.randn(1, 3, 7, 33, 30)
    w = net.Conv3d_1a_7x7.conv3d.weight
    pads = []
    for size in (30, 33, 7):  # W, H, T
        total = tf_same_total(size, 7, 2)
        pads += [total // 2, total - total // 2]
    ref = F.conv3d(F.pad(x, pads), w, stride=2)
    bn = net.Conv3d_1a_7x7.bn
    ref = F.relu(F.batch_norm(ref, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, 1e-3))
    with torch.no_grad():
        torch.testing.assert_close(net.Conv3d_1a_7x7(x), ref)


@pytest.mark.parametrize("kernel,stride,size", [
    ((1, 3, 3), (1, 2, 2), (8, 112, 112)), ((1, 3, 3), (1, 2, 2), (8, 56, 56)),   # the 224 x 224 pools
    ((3, 3, 3), (2, 2, 2), (8, 28, 28)), ((2, 2, 2), (2, 2, 2), (4, 14, 14)),
    ((3, 3, 3), (2, 2, 2), (7, 29, 30)), ((1, 3, 3), (1, 2, 2), (3, 5, 6)),      # "SAME" pads before: no ceil_mode
    ((3, 3, 3), (2, 2, 2), (2, 2, 3))])                                          # smaller than the kernel
def test_strided_pools_equal_padding_with_minus_infinity(kernel, stride, size):
    pool = MaxPool3dSame(kernel, stride)
    x = torch.randn(2, 3, *size)   # negative values too: a zero pad would change them
    ref = F.max_pool3d(pad_same(x, kernel, stride, value=float("-inf")), kernel, stride)
    assert torch.equal(pool(x), ref)
    at_224 = size in [(8, 112, 112), (8, 56, 56), (8, 28, 28), (4, 14, 14)]
    assert pool.ceil_mode_is_same(size) == at_224   # the I3D at 224 x 224 never copies a padded input


# --- random checkpoints in both key formats ---------------------------------------------------------

def random_piergiaj_state(modality: str, seed: int = 0, counters: bool = False) -> dict:
    """A random I3D checkpoint with piergiaj's key names and non-trivial BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in i3d(modality).state_dict().items():
        if k.endswith("num_batches_tracked"):
            if counters:
                state[k] = torch.tensor(1000)
            continue
        if k.endswith("running_var"):
            v = torch.rand(v.shape, generator=g) * 1.5 + 0.5
        elif k.endswith("running_mean") or k.endswith("bn.bias") or k.endswith("conv3d.bias"):
            v = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith("bn.weight"):
            v = torch.rand(v.shape, generator=g) + 0.5
        else:
            v = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / (v[0].numel()))
        state[k] = v
    return state


HASSONY2_BRANCH = {"b0": "branch_0", "b1a": "branch_1.0", "b1b": "branch_1.1", "b2a": "branch_2.0",
                   "b2b": "branch_2.1", "b3b": "branch_3.1"}


def to_hassony2(state: dict) -> dict:
    """The key names hassony2/kinetics_i3d_pytorch's ``load_conv3d`` / ``load_mixed`` write."""
    out = {}
    for key, v in state.items():
        parts = key.split(".")
        parts[0] = "conv3d_0c_1x1" if parts[0] == "logits" else parts[0].lower()
        parts = [HASSONY2_BRANCH.get(p, "batch3d" if p == "bn" else p) for p in parts]
        out[".".join(parts)] = v
    return out


@pytest.fixture(scope="module")
def rgb_checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("i3d")
    state = random_piergiaj_state("rgb")
    hassony2 = to_hassony2(random_piergiaj_state("rgb", counters=True))
    for key in ("mixed_5b.branch_2.1.batch3d.running_var", "conv3d_0c_1x1.conv3d.bias",
                "mixed_3b.branch_3.1.conv3d.weight", "conv3d_1a_7x7.batch3d.num_batches_tracked"):
        assert key in hassony2
    torch.save(state, d / "rgb_imagenet.pt")
    torch.save(hassony2, d / "i3d_rgb.pt")
    return d, state


def test_both_key_formats_load_and_give_the_same_rows(rgb_checkpoints):
    d, state = rgb_checkpoints
    batch = snippet_batch(decode_frames(17, short_side=96), 8)
    rows = {}
    for name in ("rgb_imagenet.pt", "i3d_rgb.pt"):
        stream = get_stream("i3d_rgb")(ExtractorOptions(weights_paths={"i3d_rgb": str(d / name)}))
        stream.crop = 64
        assert stream.weights_id.startswith("sha256:")
        rows[name] = stream(batch)
    assert rows["rgb_imagenet.pt"].shape == (2, 1024) and rows["rgb_imagenet.pt"].dtype == np.float32
    assert np.abs(rows["rgb_imagenet.pt"]).max() > 1e-2  # a live network, not vanishing activations
    np.testing.assert_array_equal(rows["rgb_imagenet.pt"], rows["i3d_rgb.pt"])
    net = i3d("rgb")
    net.load_state_dict(state, strict=False)
    assert batch.frames.shape[2:4] == (96, 128)
    x = torch.from_numpy(batch.frames[:, :, 16:80, 32:96]).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    with torch.no_grad():  # the stream runs the network with its BatchNorms folded (the unfolded one: below)
        np.testing.assert_allclose(rows["rgb_imagenet.pt"], net.fold_batch_norm().features(x).numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_every_key_is_checked(tmp_path, rgb_checkpoints):
    _, state = rgb_checkpoints
    cases = {
        "missing": {k: v for k, v in state.items() if k != "Mixed_4c.b2b.bn.running_mean"},
        "unexpected": {**state, "Mixed_4c.b2c.conv3d.weight": torch.zeros(1)},
        "wrong shape": {**state, "logits.conv3d.bias": torch.zeros(600)},
    }
    for problem, bad in cases.items():
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(WeightsError, match=problem):
            load_i3d_weights(i3d("rgb"), tmp_path / "bad.pt")
    torch.save({"fc.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not an I3D checkpoint"):
        load_i3d_weights(i3d("rgb"), tmp_path / "other.pt")
    # an RGB checkpoint is not a flow one: the first convolution has 3 input channels, not 2
    with pytest.raises(WeightsError, match=r"Conv3d_1a_7x7.conv3d.weight: \(64, 3, 7, 7, 7\) != \(64, 2, 7, 7, 7\)"):
        load_i3d_weights(i3d("flow"), rgb_checkpoints[0] / "i3d_rgb.pt")


# --- independent re-computation --------------------------------------------------------------------

def functional_i3d(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """The I3D feature from a piergiaj state dict with torch.nn.functional only."""
    def pad(x, k, s, value=0.0):
        p = []
        for size, kk, ss in reversed(list(zip(x.shape[2:], k, s))):
            total = tf_same_total(size, kk, ss)
            p += [total // 2, total - total // 2]
        return F.pad(x, p, value=value)

    def unit(x, name, stride=(1, 1, 1)):
        w = sd[name + ".conv3d.weight"]
        y = F.conv3d(pad(x, w.shape[2:], stride), w, stride=stride)
        y = F.batch_norm(y, sd[name + ".bn.running_mean"], sd[name + ".bn.running_var"], sd[name + ".bn.weight"],
                         sd[name + ".bn.bias"], training=False, eps=1e-3)
        return F.relu(y)

    def pool(x, k, s):
        return F.max_pool3d(pad(x, k, s), k, s)

    def mixed(x, m):
        return torch.cat([unit(x, m + ".b0"), unit(unit(x, m + ".b1a"), m + ".b1b"),
                          unit(unit(x, m + ".b2a"), m + ".b2b"), unit(pool(x, (3, 3, 3), (1, 1, 1)), m + ".b3b")], 1)

    x = unit(x, "Conv3d_1a_7x7", (2, 2, 2))
    x = pool(x, (1, 3, 3), (1, 2, 2))
    x = unit(unit(x, "Conv3d_2b_1x1"), "Conv3d_2c_3x3")
    x = pool(x, (1, 3, 3), (1, 2, 2))
    x = mixed(mixed(x, "Mixed_3b"), "Mixed_3c")
    x = pool(x, (3, 3, 3), (2, 2, 2))
    for m in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
        x = mixed(x, m)
    x = pool(x, (2, 2, 2), (2, 2, 2))
    x = mixed(mixed(x, "Mixed_5b"), "Mixed_5c")
    return F.avg_pool3d(x, (2, 7, 7), stride=1).mean(dim=(2, 3, 4))


def test_features_match_a_functional_recomputation_on_video_frames(rgb_checkpoints):
    d, state = rgb_checkpoints
    frames = decode_frames(9)  # (9, 256, 341, 3): 9 frames leave 2 time steps after Mixed_5c
    x = torch.from_numpy(frames[:, 16:240, 58:282]).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    net = i3d("rgb")
    assert load_i3d_weights(net, d / "rgb_imagenet.pt") == "piergiaj"
    with torch.no_grad():
        ours, ref = net.features(x), functional_i3d(state, x)
        folded = net.fold_batch_norm().features(x)
    assert ours.shape == (1, 1024) and ref.abs().max() > 1e-2
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    # folded into the convolutions, the BatchNorms are gone and the rows the same up to float rounding
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())
    assert all(k.endswith((".conv3d.weight", ".conv3d.bias")) for k in net.state_dict())
    torch.testing.assert_close(folded, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_matches_fp32_on_cuda(rgb_checkpoints):
    d, _ = rgb_checkpoints
    batch = snippet_batch(decode_frames(64), 16)
    stream = get_stream("i3d_rgb")(ExtractorOptions(device=torch.device("cuda"), weights_paths={"i3d_rgb": str(d / "rgb_imagenet.pt")}))
    assert stream.settings()["precision"] == "bfloat16 autocast"
    low = stream(batch)
    stream.autocast = None
    full = stream(batch)
    cos = (low * full).sum(1) / np.linalg.norm(low, axis=1) / np.linalg.norm(full, axis=1)
    assert cos.min() > 0.99, cos
    assert np.abs(low - full).max() / np.abs(full).max() < 0.05
