"""``clipae-extract --preset``: the table, explicit options winning, the manifest, and every preset
run on the sample videos with random weights (tiny: the first 0.7 s, I3D on 64x64 crops)."""
from pathlib import Path

import pytest

import toy_streams  # noqa: F401  (registers toy_colour)
import videogen
from clipae.cli import extract_main as main
from clipae.extractors.i3d_streams import I3DStream
from clipae.pipeline import manifest as mf
from clipae.core.dist import Ranks
from clipae.pipeline.extract_cli import config_from_args, parser_for
from clipae.pipeline.presets import PRESETS

DATA = Path(__file__).parent / "data" / "videos"


def config(argv):
    parser, dests = parser_for(argv)
    return config_from_args(parser.parse_args(argv), dests, Ranks())


def test_list_names_every_preset_with_its_sources(capsys):
    assert main(["--preset", "list"]) == 0
    out = capsys.readouterr().out
    for name, preset in PRESETS.items():
        assert name in out
        assert preset.sources and all(s.url.startswith("https://") and s.url in out for s in preset.sources)
    assert "unknown:" in out


def test_unknown_preset_is_one_line(capsys, tmp_path):
    assert main([str(DATA), str(tmp_path), "--preset", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown preset 'nope'" in err and "wtalc-thumos14" in err


def test_preset_sets_defaults_and_explicit_options_win(tmp_path):
    cfg = config([str(DATA), str(tmp_path), "--preset", "actionformer-thumos14", "--random-weights"])
    assert (cfg.grid.fps, cfg.grid.length, cfg.grid.stride) == (30.0, 16, 4)
    assert cfg.streams == ["i3d_rgb", "i3d_flow"]
    assert cfg.options["i3d_flow"].extra["flow"] == "tvl1" and cfg.options["i3d_flow"].extra["flow_quantize"]
    assert cfg.preset == {"name": "actionformer-thumos14", "overrides": {}}
    cfg = config([str(DATA), str(tmp_path), "--preset", "actionformer-thumos14", "--fps", "25",
                  "--no-flow-quantize", "--crops", "3"])
    assert (cfg.grid.fps, cfg.grid.stride) == (25.0, 4)
    assert not cfg.options["i3d_flow"].extra["flow_quantize"] and cfg.options["i3d_rgb"].crops == "3"
    assert cfg.preset["overrides"] == {"fps": 25.0, "flow_quantize": False, "crops": "3"}
    cfg = config([str(DATA), str(tmp_path), "--preset", "cmcs-anet13"])
    assert cfg.options["i3d_rgb"].crops == "10"
    assert config([str(DATA), str(tmp_path)]).preset is None


def test_manifest_records_the_preset(tmp_path):
    video = videogen.make_video(tmp_path / "clip.mp4", duration=1.0)
    out = tmp_path / "out"
    assert main([str(video), str(out), "--preset", "wtalc-thumos14", "--stream-module", "toy_streams",
                 "--streams", "toy_colour", "--quiet"]) == 0
    [rec] = mf.read_manifest(out / mf.MANIFEST_NAME).values()
    assert rec["preset"] == {"name": "wtalc-thumos14", "overrides": {"streams": "toy_colour"}}
    assert (rec["fps"], rec["snippet_length"], rec["snippet_stride"]) == (25.0, 16, 16)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    for video in sorted(DATA.glob("*.mp4")):
        videogen.ffmpeg("-i", video, "-t", "0.7", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", d / video.name)
    return d


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_runs_on_the_sample_videos(name, clips, tmp_path, monkeypatch):
    monkeypatch.setattr(I3DStream, "crop", 64)  # the network's input: 64x64 instead of 224x224 (CPU time)
    out = tmp_path / "out"
    assert main([str(clips), str(out), "--preset", name, "--random-weights", "--short-side", "64",
                 "--batch-size", "2", "--quiet", "--device", "cpu"]) == 0
    records = mf.read_manifest(out / mf.MANIFEST_NAME)
    assert len(records) == 2
    preset = PRESETS[name]
    for rec in records.values():
        assert rec["status"] == "ok" and rec["preset"] == {"name": name, "overrides": {"short_side": 64}}
        assert rec["fps"] == preset.options["fps"] and rec["snippet_stride"] == preset.options["snippet_stride"]
        assert set(rec["streams"]) == set(preset.options["streams"].split(","))
        flow = rec["streams"]["i3d_flow"]["settings"]
        assert flow["flow"] == "tvl1" and flow["flow_quantize"] is True
        assert rec["streams"]["i3d_rgb"]["settings"].get("crops", "center") == preset.options["crops"]
        for stream in rec["streams"]:
            assert mf.load_stream(out / mf.MANIFEST_NAME, rec, stream).shape == (rec["num_snippets"], 1024)
