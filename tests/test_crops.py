"""``--crops center|3|10`` and ``--keep-crops``: the views, flipped flow, stored shapes, the manifest,
and the models reading ``(T, crops, dim)`` streams."""

import numpy as np
import pytest
import torch
from torchvision.transforms import functional as TF

import videogen
from clipae.cli import extract_main as main
from clipae.extractors.base import ExtractorOptions, crop_views, get_stream
from clipae.extractors.i3d_streams import I3DStream
from clipae.models.data import FeatureStore
from clipae.pipeline import manifest as mf

rng = np.random.default_rng(0)


def test_ten_crop_is_torchvisions_ten_crop():
    frames = rng.integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)          # (N, H, W, C)
    views = crop_views(frames, 24, "10")                                   # (N, 10, 24, 24, C)
    assert views.shape == (2, 10, 24, 24, 3)
    for n in range(2):
        expected = TF.ten_crop(torch.from_numpy(frames[n]).permute(2, 0, 1), [24, 24])
        for v, crop in enumerate(expected):
            np.testing.assert_array_equal(views[n, v], crop.permute(1, 2, 0).numpy())
    tviews = crop_views(torch.from_numpy(frames), 24, "10")
    np.testing.assert_array_equal(tviews.numpy(), views)


def test_three_crops_run_along_the_long_side():
    land = np.arange(30 * 60).reshape(1, 30, 60, 1)
    views = crop_views(land, 20, "3")
    assert views.shape == (1, 3, 20, 20, 1)
    np.testing.assert_array_equal(views[0, 0], land[0, 5:25, 0:20])
    np.testing.assert_array_equal(views[0, 1], land[0, 5:25, 20:40])
    np.testing.assert_array_equal(views[0, 2], land[0, 5:25, 40:60])
    portrait = land.transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(crop_views(portrait, 20, "3")[0, 2], portrait[0, 40:60, 5:25])
    np.testing.assert_array_equal(crop_views(land, 20, "center")[:, 0], land[:, 5:25, 20:40])


def test_mirrored_flow_views_point_the_other_way():
    field = torch.zeros(1, 30, 40, 2)
    field[..., 0], field[..., 1] = 3.0, 2.0                                 # rightwards and down
    views = crop_views(field, 20, "10", flow=True)
    assert torch.all(views[0, :5, ..., 0] == 3.0) and torch.all(views[0, 5:, ..., 0] == -3.0)
    assert torch.all(views[..., 1] == 2.0)


def test_an_unknown_crop_count_is_an_options_error():
    with pytest.raises(ValueError, match="--crops"):
        crop_views(np.zeros((1, 30, 30, 3)), 20, "5")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return videogen.make_video(tmp_path_factory.mktemp("v") / "clip.mp4", duration=1.3, size=(96, 72))


def extract(video, out, *flags):
    assert main([str(video), str(out), "--streams", "i3d_rgb,i3d_flow", "--flow", "tvl1", "--random-weights",
                 "--short-side", "72", "--quiet", "--device", "cpu", *flags]) == 0
    [rec] = mf.read_manifest(out / mf.MANIFEST_NAME).values()
    return rec, {s: np.load(out / rec["streams"][s]["path"]) for s in rec["streams"]}


def test_kept_crops_average_to_the_stored_mean(video, tmp_path, monkeypatch):
    monkeypatch.setattr(I3DStream, "crop", 64)
    rec_mean, mean = extract(video, tmp_path / "mean", "--crops", "10")
    rec_kept, kept = extract(video, tmp_path / "kept", "--crops", "10", "--keep-crops")
    _, centre = extract(video, tmp_path / "centre")
    t = rec_mean["num_snippets"]
    for s in ("i3d_rgb", "i3d_flow"):
        assert mean[s].shape == (t, 1024) and kept[s].shape == (t, 10, 1024)
        np.testing.assert_allclose(kept[s].mean(1), mean[s], rtol=1e-4, atol=1e-5)
        assert not np.allclose(mean[s], centre[s], atol=1e-4)  # the corners and flips changed the rows
        assert rec_kept["streams"][s]["settings"]["crops"] == "10"
        assert rec_kept["streams"][s]["settings"]["views"] == 10
    assert rec_mean["config_hash"] != rec_kept["config_hash"]
    # the models read both: a (T, crops, dim) stream is averaged over its crops on load
    store = FeatureStore.open(tmp_path / "kept" / mf.MANIFEST_NAME)
    loaded = store.load(rec_kept["video_id"], ["i3d_rgb"])["i3d_rgb"]
    np.testing.assert_allclose(loaded, kept["i3d_rgb"].mean(1), rtol=1e-6)
    # a rerun with the same flags finds the (T, crops, dim) files intact and skips the video
    assert main([str(video), str(tmp_path / "kept"), "--streams", "i3d_rgb,i3d_flow", "--flow", "tvl1",
                 "--random-weights", "--short-side", "72", "--quiet", "--device", "cpu", "--crops", "10",
                 "--keep-crops"]) == 0
    assert len(list(mf.iter_lines(tmp_path / "kept" / mf.MANIFEST_NAME))) == 1


def test_clip_rows_of_kept_crops_are_unit_vectors(video):
    frames = videogen_frames(video)
    clip = get_stream("clip")(ExtractorOptions(random_weights=True, crops="3", keep_crops=True,
                                                extra={"clip_frames": 2}))
    from clipae.extractors.base import SnippetBatch
    rows = clip(SnippetBatch(index=np.arange(1), frames=frames[None, :4]))
    assert rows.shape == (1, 3, 512)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=-1), 1.0, rtol=1e-5)
    mean = get_stream("clip")(ExtractorOptions(random_weights=True, crops="3", extra={"clip_frames": 2}))
    row = mean(SnippetBatch(index=np.arange(1), frames=frames[None, :4]))
    expected = rows.mean(1) / np.linalg.norm(rows.mean(1), axis=-1, keepdims=True)
    np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-5)
    assert clip.settings()["crops"] == "3"


def videogen_frames(video):
    from clipae.decoding.decode import VideoDecoder
    d = VideoDecoder(str(video), 25.0)
    return next(iter(d.chunks()))


def test_localize_extracts_with_the_runs_crops_and_short_side():
    from clipae.eval.localize import frame_options
    from clipae.models.trained_on import TrainedOn
    grid = {"fps": 25.0, "snippet_length": 16, "snippet_stride": 16}
    run = TrainedOn.from_json({**grid, "streams": {
        "i3d_rgb": {"dim": 1024, "settings": {"crops": "10", "views": 10, "stored": "per crop (T, crops, dim)",
                                              "decode": {"frames": {"short_side": 288}}}},
        "vggish": {"dim": 128, "settings": {"decode": {"audio": {}}}}}})
    assert frame_options(run) == {"crops": "10", "keep_crops": True, "short_side": 288}
    plain = TrainedOn.from_json({**grid, "streams": {"clip": {"dim": 512, "settings": {"model": "ViT-B-16"}}}})
    assert frame_options(plain) == {"crops": "center", "keep_crops": False, "short_side": 256}


def test_a_stream_without_crops_refuses_them(video, tmp_path, capsys):
    assert main([str(video), str(tmp_path / "o"), "--stream-module", "toy_streams", "--streams", "toy_colour",
                 "--crops", "10", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not take --crops 10" in err
    # streams that read no frames ignore the option
    assert main([str(video), str(tmp_path / "a"), "--stream-module", "toy_streams", "--streams", "toy_rms",
                 "--crops", "10", "--keep-crops", "--quiet"]) == 0


def test_precision_reaches_the_networks_through_the_command_line(video, tmp_path, monkeypatch):
    monkeypatch.setattr(I3DStream, "crop", 64)
    rec_auto, auto = extract(video, tmp_path / "auto")
    rec_bf16, bf16 = extract(video, tmp_path / "bf16", "--precision", "bfloat16")
    for s in ("i3d_rgb", "i3d_flow"):
        assert rec_auto["streams"][s]["settings"]["precision"] == "float32"      # auto on the CPU
        assert rec_bf16["streams"][s]["settings"]["precision"] == "bfloat16 autocast"
        assert bf16[s].dtype == np.float32 and not np.array_equal(bf16[s], auto[s])
        norms = np.linalg.norm(auto[s], axis=1)
        live = norms > 0                                                        # (a still frame's flow rows can be 0)
        cos = (bf16[s] * auto[s]).sum(1)[live] / np.linalg.norm(bf16[s], axis=1)[live] / norms[live]
        assert live.any() and cos.min() > 0.99                                  # bfloat16 rounding only
    assert rec_auto["config_hash"] != rec_bf16["config_hash"]


def test_compile_reaches_clip_through_the_command_line(video, monkeypatch):
    """``--compile`` hands CLIP's image tower to ``torch.compile`` (recorded here and passed through,
    so the test does not wait a minute for inductor) and marks its settings, so the config_hash;
    the I3D stays eager and its settings are those of earlier runs."""
    from clipae.core.dist import Ranks
    from clipae.pipeline.extract_cli import build_parser, config_from_args
    parser, dests = build_parser()
    argv = [str(video), "out", "--streams", "clip,i3d_rgb", "--clip-model", "ViT-B-32", "--random-weights", "--device", "cpu"]
    handed = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: handed.append(fn) or fn)
    for flags in ([], ["--compile"]):
        config = config_from_args(parser.parse_args(argv + flags), dests, Ranks())
        clip = get_stream("clip")(config.options["clip"])
        i3d = get_stream("i3d_rgb")(config.options["i3d_rgb"])
        assert handed == ([clip.visual] if flags else [])
        assert clip.settings().get("compiled") is (True if flags else None)
        assert "compiled" not in i3d.settings()


def test_precision_choices():
    from clipae.extractors.base import OptionsError, autocast_dtype
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype(torch.device("cuda"), "auto") == torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), "float32") is None
    assert autocast_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    with pytest.raises(OptionsError, match="--precision"):
        autocast_dtype(torch.device("cpu"), "fp8")
