"""The vggish stream: log-mel front end, network layout, checkpoints, post-processing, window."""
import argparse
import dataclasses
import hashlib
import io
import math
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from clipae.extractors.base import ExtractorOptions, OptionsError, SnippetBatch, get_stream
from clipae.extractors.logmel import LogMel
from clipae.extractors import vggish as vggish_mod
from clipae.extractors.vggish import VGGISH_PCA, VGGISH_WEIGHTS, VGGishExtractor, pca_quantizer, vggish
from clipae.core import weights as weights_mod
from clipae.core.fsio import sha256_of
from clipae.core.weights import WeightsError

DATA = Path(__file__).resolve().parent / "data" / "vggish"
SR = 16000
WINDOW = 15600

# torchvggish's state-dict keys and shapes, written out from its model definition
TORCHVGGISH_SHAPES = {
    "features.0.weight": (64, 1, 3, 3), "features.0.bias": (64,),
    "features.3.weight": (128, 64, 3, 3), "features.3.bias": (128,),
    "features.6.weight": (256, 128, 3, 3), "features.6.bias": (256,),
    "features.8.weight": (256, 256, 3, 3), "features.8.bias": (256,),
    "features.11.weight": (512, 256, 3, 3), "features.11.bias": (512,),
    "features.13.weight": (512, 512, 3, 3), "features.13.bias": (512,),
    "embeddings.0.weight": (4096, 12288), "embeddings.0.bias": (4096,),
    "embeddings.2.weight": (4096, 4096), "embeddings.2.bias": (4096,),
    "embeddings.4.weight": (128, 4096), "embeddings.4.bias": (128,),
}


# ---------------------------------------------------------------- independent references (float64)

def reference_mel_matrix(num_bins=257, num_bands=64, sr=SR, low=125.0, high=7500.0):
    """Triangles in HTK mel, one bin and one band at a time; DC bin left at zero."""
    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    edges = [mel(low) + (mel(high) - mel(low)) * i / (num_bands + 1) for i in range(num_bands + 2)]
    w = np.zeros((num_bins, num_bands))
    for k in range(1, num_bins):
        m = mel(k * (sr / 2) / (num_bins - 1))
        for j in range(num_bands):
            lo, c, hi = edges[j], edges[j + 1], edges[j + 2]
            if lo < m <= c:
                w[k, j] = (m - lo) / (c - lo)
            elif c < m < hi:
                w[k, j] = (hi - m) / (hi - c)
    return w


def reference_log_mel(signal):
    """``(S,)`` → ``(F, 64)``: frames of 400 every 160, periodic Hann, |DFT| at 512 points by an
    explicit sum, mel weights, log(x + 0.01)."""
    n_win, hop, n_fft = 400, 160, 512
    hann = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / n_win) for n in range(n_win)])
    k = np.arange(n_fft // 2 + 1)[:, None]
    dft = np.exp(-2j * np.pi * k * np.arange(n_win)[None, :] / n_fft)     # zero-padding to 512 implied
    w = reference_mel_matrix()
    n_frames = 1 + (len(signal) - n_win) // hop
    out = np.empty((n_frames, 64))
    for f in range(n_frames):
        spectrum = np.abs(dft @ (signal[f * hop:f * hop + n_win] * hann))
        out[f] = np.log(spectrum @ w + 0.01)
    return out


def reference_embedding(patches, state):
    """VGGish as the TensorFlow graph runs it: NHWC activations, HWIO kernels, SAME padding,
    slim.flatten of the NHWC map, fc weights as (in, out); no ReLU on fc2. float64 NumPy."""
    x = patches[..., None].astype(np.float64)                                   # (B, 96, 64, 1)
    for idx, pool in ((0, True), (3, True), (6, False), (8, True), (11, False), (13, True)):
        kernel = state[f"features.{idx}.weight"].double().numpy().transpose(2, 3, 1, 0)   # OIHW → HWIO
        bias = state[f"features.{idx}.bias"].double().numpy()
        b, h, w, c = x.shape
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        cols = np.concatenate([padded[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], axis=-1)
        y = cols.reshape(-1, 9 * c) @ kernel.reshape(9 * c, -1)                 # im2col, (i, j, c) order
        x = np.maximum(y.reshape(b, h, w, -1) + bias, 0.0)
        if pool:
            x = x.reshape(b, h // 2, 2, w // 2, 2, -1).max(axis=(2, 4))
    x = x.reshape(len(x), -1)                                                   # (B, 6*4*512), NHWC
    for idx in (0, 2, 4):
        fc = state[f"embeddings.{idx}.weight"].double().numpy().T                # (in, out) as in TF
        x = x @ fc + state[f"embeddings.{idx}.bias"].double().numpy()
        if idx != 4:
            x = np.maximum(x, 0.0)
    return x


def reference_postprocess(embeddings, pca_matrix, pca_means):
    """``vggish_postprocess.Postprocessor.postprocess``, step by step."""
    pca_applied = np.dot(pca_matrix, (embeddings.T - pca_means.reshape(-1, 1))).T
    clipped = np.clip(pca_applied, -2.0, 2.0)
    return ((clipped + 2.0) * (255.0 / 4.0)).astype(np.uint8)


# ---------------------------------------------------------------- fixtures

def _signals(n, length=WINDOW, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(length) / SR
    out = np.empty((n, length), np.float32)
    for i in range(n):
        out[i] = 0.3 * np.sin(2 * np.pi * (220 + 300 * i) * t) + 0.05 * rng.standard_normal(length)
    return out


def _options(**extra_and_kw):
    kw = {k: extra_and_kw.pop(k) for k in ("random_weights", "weights_dir") if k in extra_and_kw}
    if "weights_path" in extra_and_kw:
        kw["weights_paths"] = {"vggish": extra_and_kw.pop("weights_path")}
    return ExtractorOptions(extra=extra_and_kw, **kw)


def _batch(audio):
    return SnippetBatch(index=np.arange(len(audio)), audio=audio)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def random_extractor():
    return VGGishExtractor(_options(random_weights=True))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A randomly initialised model and its state dict saved under the real key names."""
    model = vggish(None, seed=123)
    path = tmp_path_factory.mktemp("ckpt") / "vggish-random.pth"
    torch.save(model.state_dict(), path)
    return model, path


def _tiny_checkpoint(path, state_shapes):
    """A checkpoint of the given shapes whose tensors share one element (a few KB on disk)."""
    torch.save({k: torch.full((1,), 0.01).expand(s) for k, s in state_shapes.items()}, path)
    return path


@pytest.fixture(scope="module")
def released_pca(tmp_path_factory):
    """The released PCA parameters as torchvggish ships them: a legacy-format torch.save of a dict
    of float64 NumPy arrays (that format gives the released file's size, 181,358 bytes, within 2)."""
    npz = np.load(DATA / "vggish_pca_params.npz")
    params = {"pca_eigen_vectors": npz["pca_eigen_vectors"], "pca_means": npz["pca_means"]}
    path = tmp_path_factory.mktemp("pca") / VGGISH_PCA.filename
    torch.save(params, path, _use_new_zipfile_serialization=False)
    return params, path


# ---------------------------------------------------------------- front end

def test_mel_matrix_matches_loop_reference():
    np.testing.assert_allclose(LogMel().mel.numpy(), reference_mel_matrix(), rtol=0, atol=1e-12)


def test_log_mel_matches_independent_numpy():
    audio = _signals(3)
    audio[1, 5000:9000] = 0.0                          # a silent stretch: log(0.01) frames
    got = LogMel()(torch.from_numpy(audio)).numpy()
    assert got.shape == (3, 96, 64) and got.dtype == np.float64
    for i in range(3):
        np.testing.assert_allclose(got[i], reference_log_mel(audio[i].astype(np.float64)), rtol=1e-10, atol=1e-10)
    assert np.isclose(got[1], math.log(0.01)).all(axis=1).sum() >= 10
    # any length: F = 1 + (S - 400) // 160
    short = _signals(1, length=4000, seed=3)
    np.testing.assert_allclose(LogMel()(torch.from_numpy(short)).numpy()[0],
                               reference_log_mel(short[0].astype(np.float64)), rtol=1e-10, atol=1e-10)


def test_window_is_centred_on_the_snippet_centre():
    assert VGGishExtractor.audio_window == WINDOW == 400 + 95 * 160
    silence = np.zeros((1, WINDOW), np.float32)
    click = silence.copy()
    click[0, WINDOW // 2] = 1.0                        # the snippet centre
    base = LogMel()(torch.from_numpy(silence)).numpy()[0]
    hit = LogMel()(torch.from_numpy(click)).numpy()[0]
    changed = np.flatnonzero((np.abs(hit - base) > 1e-9).any(axis=1))
    assert changed.tolist() == [47, 48]                # the two middle frames of 96
    np.testing.assert_allclose(hit[47], hit[48], rtol=0, atol=1e-12)   # symmetric about the centre


# ---------------------------------------------------------------- network and checkpoints

def test_stream_is_registered_with_its_contract():
    cls = get_stream("vggish")
    assert cls is VGGishExtractor and cls.dim == 128 and cls.inputs == ("audio",)


def test_random_checkpoint_with_real_keys_loads_and_reproduces_its_model(checkpoint):
    model, path = checkpoint
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == TORCHVGGISH_SHAPES
    ex = VGGishExtractor(_options(weights_path=str(path)))
    assert ex.weights_id == "sha256:" + sha256_of(path)
    audio = _signals(2)
    got = ex(_batch(audio))
    with torch.no_grad():
        expected = model(LogMel()(torch.from_numpy(audio)).float()).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # the same weights run as the TensorFlow graph runs them (NHWC, HWIO, NHWC flatten)
    tf_like = reference_embedding(LogMel()(torch.from_numpy(audio[:1])).numpy(), model.state_dict())
    np.testing.assert_allclose(got[:1], tf_like, rtol=1e-4, atol=1e-4 * np.abs(tf_like).max())


@pytest.mark.parametrize("tamper,message", [
    (lambda s: s.pop("embeddings.4.bias"), "1 missing (e.g. embeddings.4.bias)"),
    (lambda s: s.update({"embeddings.5.weight": (1,)}), "1 unexpected (e.g. embeddings.5.weight)"),
    (lambda s: s.update({"features.0.weight": (64, 1, 3, 4)}),
     "1 of wrong shape (e.g. features.0.weight: (64, 1, 3, 4) != (64, 1, 3, 3))"),
])
def test_checkpoint_with_bad_keys_fails_clearly(tmp_path, tamper, message):
    shapes = dict(TORCHVGGISH_SHAPES)
    vggish(_tiny_checkpoint(tmp_path / "good.pth", shapes))          # the untampered layout loads
    tamper(shapes)
    bad = _tiny_checkpoint(tmp_path / "bad.pth", shapes)
    with pytest.raises(WeightsError) as e:
        VGGishExtractor(_options(weights_path=str(bad)))
    assert str(bad) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_not_a_checkpoint_fails_clearly(tmp_path):
    bad = tmp_path / "vggish.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="cannot load .*vggish.pth"):
        vggish(bad)


def test_offline_download_names_file_url_and_option(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(weights_mod.urllib.request, "urlopen", offline)
    with pytest.raises(WeightsError) as e:
        VGGishExtractor(_options(weights_dir=str(tmp_path)))
    msg = str(e.value)
    assert VGGISH_WEIGHTS.filename in msg and VGGISH_WEIGHTS.url in msg and "--weights vggish=" in msg
    assert "\n" not in msg and list(tmp_path.iterdir()) == []     # no partial file left behind
    # the PCA file, needed only with --vggish-postprocess pca, names its own option
    net = _tiny_checkpoint(tmp_path / "net.pth", TORCHVGGISH_SHAPES)
    with pytest.raises(WeightsError) as e:
        VGGishExtractor(_options(weights_path=str(net), weights_dir=str(tmp_path / "cache"), vggish_postprocess="pca"))
    msg = str(e.value)
    assert VGGISH_PCA.filename in msg and VGGISH_PCA.url in msg and "--vggish-pca" in msg


def test_specs_carry_the_published_hash_prefix():
    for spec in (VGGISH_WEIGHTS, VGGISH_PCA):
        assert spec.filename.rsplit("-", 1)[1].split(".")[0] == spec.sha256 and len(spec.sha256) == 8
        assert spec.url.endswith("/releases/download/v0.1/" + spec.filename)


def test_first_use_downloads_verifies_and_loads(tmp_path, monkeypatch):
    served = _tiny_checkpoint(tmp_path / "served.pth", TORCHVGGISH_SHAPES).read_bytes()
    digest = hashlib.sha256(served).hexdigest()
    urls = []

    def fake_urlopen(url, timeout):
        urls.append(url)
        return io.BytesIO(served)

    monkeypatch.setattr(weights_mod.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(vggish_mod, "VGGISH_WEIGHTS", dataclasses.replace(VGGISH_WEIGHTS, sha256=digest[:8]))
    cache = tmp_path / "cache"
    ex = VGGishExtractor(_options(weights_dir=str(cache)))
    assert urls == [VGGISH_WEIGHTS.url] and ex.weights_id == "sha256:" + digest
    assert (cache / VGGISH_WEIGHTS.filename).read_bytes() == served
    VGGishExtractor(_options(weights_dir=str(cache)))
    assert len(urls) == 1                                            # the second use reads the cache


def test_cached_file_with_wrong_hash_is_refused(tmp_path):
    _tiny_checkpoint(tmp_path / VGGISH_WEIGHTS.filename, TORCHVGGISH_SHAPES)   # not the released file
    with pytest.raises(WeightsError, match="expected 10086976.*--weights vggish=PATH"):
        VGGishExtractor(_options(weights_dir=str(tmp_path)))


# ---------------------------------------------------------------- outputs

def test_one_pre_activation_row_per_window(random_extractor):
    audio = _signals(5)
    out = random_extractor(_batch(audio))
    assert out.shape == (5, 128) and out.dtype == np.float32
    assert (out < 0).any()                              # no ReLU after the embedding layer
    assert random_extractor.weights_id == "random"
    assert random_extractor.settings()["postprocess"] == "none" and not random_extractor.settings()["final_relu"]


def test_relu_option_reproduces_torchvggish_output(random_extractor):
    relu = VGGishExtractor(_options(random_weights=True, vggish_postprocess="relu"))
    audio = _signals(3, seed=5)
    np.testing.assert_allclose(relu(_batch(audio)), np.maximum(random_extractor(_batch(audio)), 0), rtol=0, atol=1e-6)
    assert relu.settings()["final_relu"] and relu.settings() != random_extractor.settings()


def test_random_weights_are_deterministic_and_tell_sine_from_silence(random_extractor):
    again = VGGishExtractor(_options(random_weights=True))
    t = np.arange(WINDOW) / SR
    sine = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    audio = np.stack([sine, np.zeros(WINDOW, np.float32)])
    a, b = random_extractor(_batch(audio)), again(_batch(audio))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a[0] - a[1]).max() > 0.1 * np.abs(a).max()


def test_pca_postprocessing_matches_numpy(released_pca, random_extractor):
    params, path = released_pca
    rng = np.random.default_rng(7)
    emb = params["pca_means"] + 0.3 * rng.standard_normal((64, 128))
    got = pca_quantizer(path)(torch.from_numpy(emb)).numpy()
    expected = reference_postprocess(emb, params["pca_eigen_vectors"], params["pca_means"])
    np.testing.assert_array_equal(got, expected)
    assert got.min() == 0 and got.max() == 255 and len(np.unique(got)) > 200   # clipped ends and the range between
    # (128, 1) means as tensors in a zip-format file load too
    column = path.with_name("column.pth")
    torch.save({"pca_eigen_vectors": torch.from_numpy(params["pca_eigen_vectors"]),
                "pca_means": torch.from_numpy(params["pca_means"]).reshape(128, 1)}, column)
    np.testing.assert_array_equal(pca_quantizer(column)(torch.from_numpy(emb)).numpy(), expected)

    ex = VGGishExtractor(_options(random_weights=True, vggish_postprocess="pca", vggish_pca=str(path)))
    audio = _signals(4, seed=9)
    raw = random_extractor(_batch(audio)).astype(np.float64)
    np.testing.assert_array_equal(ex(_batch(audio)), reference_postprocess(raw, params["pca_eigen_vectors"], params["pca_means"]))
    assert ex.settings()["postprocess"] == "pca" and ex.settings()["pca_params"] == "sha256:" + sha256_of(path)


def test_pca_file_with_wrong_keys_fails_clearly(tmp_path, released_pca):
    params, _ = released_pca
    bad = tmp_path / "pca.pth"
    torch.save({"pca_eigen_vectors": params["pca_eigen_vectors"][:64]}, bad, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match=r"missing \(e.g. pca_means\); 1 of wrong shape"):
        pca_quantizer(bad)


def test_options_are_declared_and_checked(random_extractor):
    parser = argparse.ArgumentParser()
    VGGishExtractor.add_arguments(parser)
    args = vars(parser.parse_args(["--vggish-postprocess", "pca", "--vggish-pca", "p.pth"]))
    assert args == {"vggish_postprocess": "pca", "vggish_pca": "p.pth"}
    assert vars(parser.parse_args([]))["vggish_postprocess"] == "none"
    with pytest.raises(OptionsError):
        VGGishExtractor(_options(random_weights=True, vggish_postprocess="whiten"))
    with pytest.raises(OptionsError):
        VGGishExtractor(_options(random_weights=True, vggish_pca="p.pth"))
    with pytest.raises(ValueError, match=r"\(B, 15600\)"):
        random_extractor(_batch(np.zeros((2, 16000), np.float32)))


def test_builder_gives_real_cpu_tensors_without_the_to_empty_import():
    """The meta-device build is materialised in place: every parameter and buffer is a CPU tensor
    of its declared shape, and the start-up cost of ``Module.to_empty`` (its first call imports
    torch's symbolic-shape machinery, about half a second) is not paid."""
    import subprocess
    import sys
    code = ("import sys; from clipae.extractors.vggish import vggish; m = vggish(None); "
            "ts = list(m.parameters()) + list(m.buffers()); "
            "assert all(t.device.type == 'cpu' and t.is_leaf for t in ts), 'not materialised'; "
            "assert all(p.requires_grad for p in m.parameters()); "
            "print(int('torch.fx.experimental.symbolic_shapes' in sys.modules), sum(t.numel() for t in ts))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    refs, numel = out.stdout.split()
    assert refs == "0"
    assert int(numel) == sum(math.prod(s) for s in TORCHVGGISH_SHAPES.values())
