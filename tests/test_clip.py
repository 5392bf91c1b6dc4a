"""The clip stream: rows equal open_clip's own encode_image averaged, frame choice, weights."""
import argparse
import dataclasses

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipae.extractors import clip as clip_stream
from clipae.extractors.base import ExtractorOptions, OptionsError, available_streams, get_stream
from clipae.core.weights import WeightsError
from video_frames import decode_frames, snippet_batch


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Random ViT-B-32 weights saved as float16, as OpenAI's release stores most of them."""
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None, force_quick_gelu=True)
    path = tmp_path_factory.mktemp("clip") / "vit_b_32.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    model.half().float().eval()
    return path, model, preprocess


def test_rows_are_open_clips_encode_image_averaged(checkpoint):
    path, model, preprocess = checkpoint
    parser = argparse.ArgumentParser()
    get_stream("clip").add_arguments(parser.add_argument_group("clip stream"))
    extra = vars(parser.parse_args(["--clip-model", "ViT-B-32", "--clip-frames", "2"]))
    stream = get_stream("clip")(ExtractorOptions(weights_paths={"clip": str(path)}, extra=extra))
    assert stream.settings()["frames"] == 2 and stream.settings()["model"] == "ViT-B-32"
    batch = snippet_batch(decode_frames(8), 4)  # 2 snippets of 4 frames; frames 1, 3 and 5, 7 are used
    rows = stream(batch)
    assert rows.shape == (2, 512) and rows.dtype == np.float32
    with torch.no_grad():
        for i in range(2):
            images = torch.stack([preprocess(Image.fromarray(batch.frames[i, j])) for j in (1, 3)])
            emb = F.normalize(model.encode_image(images), dim=-1).mean(0)
            np.testing.assert_allclose(rows[i], F.normalize(emb, dim=0).numpy(), rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)


def test_the_inference_quickgelu_gives_open_clips_bits(checkpoint):
    path, model, _ = checkpoint
    stream = get_stream("clip")(ExtractorOptions(weights_paths={"clip": str(path)}, extra={"clip_model": "ViT-B-32"}))
    acts = [m for m in stream.visual.modules() if isinstance(m, (open_clip.transformer.QuickGELU,
                                                                 clip_stream.InferenceQuickGELU))]
    assert len(acts) == 12 and all(isinstance(m, clip_stream.InferenceQuickGELU) for m in acts)  # 12 image blocks
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(stream.visual(x), model.encode_image(x))
    y = torch.randn(4, 8, requires_grad=True)  # with a gradient recorded it is open_clip's formula
    clip_stream.InferenceQuickGELU()(y).sum().backward()
    torch.testing.assert_close(y.grad, torch.func.grad(lambda t: (t * torch.sigmoid(1.702 * t)).sum())(y.detach()))


def test_the_image_stream_keeps_only_the_image_tower(checkpoint):
    path, model, _ = checkpoint
    stream = get_stream("clip")(ExtractorOptions(weights_paths={"clip": str(path)}, extra={"clip_model": "ViT-B-32"}))
    ours = {n for n, _ in stream.visual.named_parameters()}
    assert ours == {n[len("visual."):] for n, _ in model.named_parameters() if n.startswith("visual.")}
    assert not hasattr(stream, "model")   # the text tower (transformer, token embedding) was let go


@pytest.mark.parametrize("edit, message", [("drop_text", "1 missing (e.g. token_embedding.weight)"),
                                           ("drop_image", "1 missing (e.g. visual.proj)"),
                                           ("extra", "1 unexpected (e.g. visual.extra)")])
def test_the_whole_checkpoint_is_checked_though_only_the_image_tower_is_kept(checkpoint, tmp_path, edit, message):
    path, _, _ = checkpoint
    state = torch.load(path, weights_only=True)
    if edit == "drop_text":
        del state["token_embedding.weight"]
    elif edit == "drop_image":
        del state["visual.proj"]
    else:
        state["visual.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="does not match: " + message.replace("(", r"\(").replace(")", r"\)")):
        get_stream("clip")(ExtractorOptions(weights_paths={"clip": str(tmp_path / "bad.pt")},
                                            extra={"clip_model": "ViT-B-32"}))


def test_tensor_preprocessing_stays_close_to_pil(checkpoint):
    path, _, preprocess = checkpoint
    frames = decode_frames(2, video="v_ZNVhz7ctTq0.mp4")
    stream = get_stream("clip")(ExtractorOptions(weights_paths={"clip": str(path)},
                                                 extra={"clip_model": "ViT-B-32", "clip_preprocess": "tensor"}))
    pil = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
    tensor = stream.images(frames)
    assert tensor.shape == pil.shape == (2, 3, 224, 224)
    levels = ((tensor - pil) * torch.tensor(preprocess.transforms[-1].std).view(3, 1, 1) * 255).abs().round()
    assert (levels <= 1).float().mean() > 0.999 and levels.max() <= 8  # 8-bit levels of the resampled image


def test_frames_are_evenly_spaced():
    assert clip_stream.frame_indices(16, 4).tolist() == [2, 6, 10, 14]
    assert clip_stream.frame_indices(16, 1).tolist() == [8]
    assert clip_stream.frame_indices(16, 16).tolist() == list(range(16))
    assert clip_stream.frame_indices(5, 0).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(OptionsError, match="--clip-frames 17"):
        clip_stream.frame_indices(16, 17)


def test_specs_are_the_openai_releases_open_clip_lists():
    for name, spec in clip_stream.WEIGHTS.items():
        cfg = open_clip.get_pretrained_cfg(name, "openai")
        assert spec.url == cfg["url"] and spec.url.split("/")[-2] == spec.sha256 and len(spec.sha256) == 64
        assert cfg["quick_gelu"] == clip_stream.QUICK_GELU


def test_failed_download_is_a_weights_error_naming_the_file_and_option(tmp_path, monkeypatch):
    spec = clip_stream.WEIGHTS["ViT-B-16"]
    monkeypatch.setitem(clip_stream.WEIGHTS, "ViT-B-16", dataclasses.replace(spec, url="http://127.0.0.1:9/ViT-B-16.pt"))
    with pytest.raises(WeightsError) as e:
        get_stream("clip")(ExtractorOptions(weights_dir=str(tmp_path)))
    msg = str(e.value)
    assert "ViT-B-16.pt" in msg and "http://127.0.0.1:9/ViT-B-16.pt" in msg and "--weights clip=" in msg
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated in favour of torch.export
def test_torchscript_archives_are_read_for_their_tensors_only(tmp_path):
    class Released(torch.nn.Module):  # OpenAI's archives keep a few integers beside the weights
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Parameter(torch.arange(6.0).view(2, 3))
            self.register_buffer("input_resolution", torch.tensor(224))

        def forward(self, x):
            return x @ self.proj

    torch.jit.save(torch.jit.script(Released()), tmp_path / "release.pt")
    state = clip_stream.load_clip_state(tmp_path / "release.pt")
    assert list(state) == ["proj"] and state["proj"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_every_stream_declares_its_options_without_clashes():
    parser = argparse.ArgumentParser()
    for name in available_streams():
        get_stream(name).add_arguments(parser.add_argument_group(f"{name} stream"))
    args = parser.parse_args([])
    assert (args.flow, args.clip_model, args.clip_frames) == ("raft_large", "ViT-B-16", 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_matches_fp32_on_cuda(checkpoint):
    path, _, _ = checkpoint
    batch = snippet_batch(decode_frames(32), 16)
    stream = get_stream("clip")(ExtractorOptions(device=torch.device("cuda"), weights_paths={"clip": str(path)},
                                                 extra={"clip_model": "ViT-B-32"}))
    assert stream.settings()["precision"] == "bfloat16 autocast"
    low = stream(batch)
    stream.autocast = None
    full = stream(batch)
    assert ((low * full).sum(1)).min() > 0.99  # unit rows: the cosine similarity
