"""Video decoding: pts resampling (checked against ffmpeg's fps filter), backends, rotation, bad files."""
from pathlib import Path

import decord
import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

import videogen
from clipae.extractors.base import centre_crop
from clipae.decoding.decode import (BackendError, DecodeError, DecordBackend, FrameSettings, PyAVBackend,
                                    VideoDecoder, resize_short_side, source_indices)

DATA = Path(__file__).parent / "data" / "videos"


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("decode")
    return {
        "vfr": videogen.make_colour_video(d / "vfr.mp4", [("red", 1.0, 10), ("blue", 0.5, 30), ("lime", 0.7, 5)]),
        "rot90": videogen.make_video(d / "rot90.mp4", duration=1.0, rotate=90, audio=None),
        "rot270": videogen.make_video(d / "rot270.mp4", duration=1.0, rotate=-90, audio=None),
        "plain": videogen.make_video(d / "plain.mp4", duration=2.0, size=(96, 64), audio=None),
        "truncated": videogen.make_truncated(d / "truncated.mp4"),
        "audio_only": videogen.make_audio_only(d / "audio_only.mp4"),
        "zero": _write(d / "zero.mp4", b""),
        "text": _write(d / "text.mp4", b"this is a text file, not a video\n"),
    }


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    """Exact equality, quick on large arrays (``np.testing`` is slow on ~100 MB)."""
    assert a.shape == b.shape and np.array_equal(a, b), f"{np.count_nonzero(a != b)} values differ"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def decode_all(path, backends=None, native=True, fps=25.0):
    """All grid frames; ``native`` keeps the source size (no resize) to compare with ffmpeg."""
    dec = VideoDecoder(str(path), fps, backends=backends)
    dec.open()
    if native:
        dec.settings = FrameSettings(short_side=min(dec.info.width, dec.info.height))
    frames = np.concatenate(list(dec.chunks()))
    dec.close()
    return dec, frames


def test_source_indices_rule():
    # frames at 0, 0.1, 0.2 (10 fps) and then at 30 fps; targets at 25 fps sample at (k + 0.5) / 25
    times = np.array([0.0, 0.1, 0.2, 0.3, 1 / 3 + 0.3, 2 / 3 + 0.3])
    idx = source_indices(times, 25.0, 10)
    centres = (np.arange(10) + 0.5) / 25
    expected = [max(i for i, t in enumerate(times) if t < c) for c in centres]
    assert idx.tolist() == expected
    # a frame presented exactly at a target's centre belongs to the next target (ffmpeg's rounding)
    assert source_indices(np.array([0.0, 0.02, 0.06]), 25.0, 2).tolist() == [0, 1]


@pytest.mark.parametrize("name", ["v_GGSY1Qvo990.mp4", "vfr"])
def test_resampling_matches_ffmpeg_fps_filter(videos, name):
    """Every grid frame equals what ``ffmpeg -vf fps=25`` makes. ffmpeg may stop a frame or two
    earlier: the grid keeps a last partial frame, and gives the last source frame an average
    frame's duration where ffmpeg uses the container's (``vfr`` ends on a 0.2 s frame)."""
    path = DATA / name if name.endswith(".mp4") else videos[name]
    dec, ours = decode_all(path)
    h, w = ours.shape[1:3]
    ref = videogen.rgb_frames(path, (w, h), vf="fps=25")
    assert 0 <= len(ours) - len(ref) <= 2
    assert len(ours) == dec.timing.num_grid_frames
    assert_same(ours[:len(ref)], ref)


def test_vfr_colours_land_on_the_grid(videos):
    dec, frames = decode_all(videos["vfr"])
    # red 1.0 s, blue 0.5 s, lime 0.7 s: target k shows the segment begun before (k + 0.5) / 25
    assert dec.timing.num_frames == 10 + 15 + 4 and dec.timing.duration_s == pytest.approx(2.2, abs=0.05)
    colour = frames.reshape(len(frames), -1, 3).mean(axis=1)
    t = (np.arange(len(frames)) + 0.5) / 25
    segment = np.searchsorted([0.0, 1.0, 1.5], t - 1e-9, side="right") - 1  # t == 1.5: still blue
    expect = np.array([[254, 0, 0], [0, 0, 254], [0, 255, 0]])[segment]
    assert segment.tolist().count(1) == 13  # blue at t = 1.02 .. 1.50
    np.testing.assert_allclose(colour, expect, atol=3)


def test_sample_video_facts():
    dec = VideoDecoder(str(DATA / "v_GGSY1Qvo990.mp4"), 25.0)
    timing = dec.open()
    assert timing.num_frames == 355
    assert timing.native_fps == pytest.approx(19.62, abs=1e-6)
    assert timing.duration_s == pytest.approx(355 / 19.62, abs=1e-6)
    assert timing.num_grid_frames == 453  # ceil(18.094 * 25)


def test_backends_agree_and_pyav_fallback(videos):
    _, with_decord = decode_all(videos["plain"], backends=[DecordBackend()], native=False)
    _, with_pyav = decode_all(videos["plain"], backends=[PyAVBackend()], native=False)
    assert_same(with_decord, with_pyav)
    assert with_decord.shape[1:] == (256, 384, 3)


@pytest.mark.parametrize("fps", [25, 30, 19.62])
def test_decord_parked_between_chunks_gives_every_frame(tmp_path, fps):
    """Parking decord (dropping what it decoded ahead) after every chunk of 4 frames, in the middle
    of keyframe intervals and on them, gives the frames PyAV gives: at, above and below the grid's rate."""
    path = videogen.make_video(tmp_path / "gop10.mp4", duration=3.0, size=(96, 64), fps=fps, audio=None)
    dec = VideoDecoder(str(path), 25.0, backends=[DecordBackend()], chunk=4)
    dec.open()
    parked = []
    for chunk in dec.chunks():
        parked.append(chunk)
        dec.park()
    assert dec.backend == "decord" and len(parked) > 10
    _, with_pyav = decode_all(path, backends=[PyAVBackend()], native=False)
    assert_same(np.concatenate(parked), with_pyav)


def test_decord_park_that_cannot_seek_leaves_the_next_read_to_seek(tmp_path, monkeypatch):
    """A seek failing inside park() is not an error of its own: the next read seeks accurately."""
    path = videogen.make_video(tmp_path / "gop10.mp4", duration=2.0, size=(96, 64), audio=None)
    _, want = decode_all(path, backends=[PyAVBackend()], native=True)
    dec = VideoDecoder(str(path), 25.0, backends=[DecordBackend()], chunk=8)
    dec.open()
    dec.settings = FrameSettings(short_side=64)
    got = []
    for chunk in dec.chunks():
        got.append(chunk)
        monkeypatch.setattr(dec._video._reader, "seek", lambda pos: (_ for _ in ()).throw(decord.DECORDError("no")))
        dec.park()
    assert dec.backend == "decord" and len(got) > 3
    assert_same(np.concatenate(got), want)


class Flaky:
    """A backend that cannot open the file, or stops with an error after ``good`` frames."""

    def __init__(self, good: int | None):
        self.name, self.good = "flaky", good

    def open(self, path, info, times):
        if self.good is None:
            raise BackendError("flaky: cannot open")
        real = PyAVBackend().open(path, info, times)
        good = self.good

        class Opened:
            def frames(self, indices):
                for i, frame in enumerate(real.frames(indices)):
                    if i == good:
                        raise BackendError("flaky: read error")
                    yield frame

            def close(self):
                real.close()
        return Opened()


@pytest.mark.parametrize("good", [None, 0, 7])
def test_next_backend_takes_over(videos, good):
    """A backend failing to open, or failing mid-video, hands over to the next one seamlessly."""
    _, expected = decode_all(videos["plain"], backends=[PyAVBackend()], native=False)
    dec, frames = decode_all(videos["plain"], backends=[Flaky(good), PyAVBackend()], native=False)
    assert_same(frames, expected)
    assert dec.backend == "pyav"


@pytest.mark.parametrize("name", ["rot90", "rot270"])
def test_rotation_metadata_is_applied(videos, name):
    dec, frames = decode_all(videos[name])
    assert dec.info.rotation in (90, 270) and dec.backend == "pyav"  # decord ignores rotation
    assert frames.shape[1:] == (64, 48, 3)  # portrait
    assert_same(frames, videogen.rgb_frames(videos[name], (48, 64)))  # ffmpeg autorotates


def test_resize_like_torchvision_and_centre_crop():
    frames = np.random.default_rng(0).integers(0, 256, (2, 240, 320, 3), dtype=np.uint8)
    ours = resize_short_side(frames, 256)
    ref = TF.resize(torch.from_numpy(frames).permute(0, 3, 1, 2), [256], antialias=True).permute(0, 2, 3, 1).numpy()
    assert_same(ours, ref)
    assert resize_short_side(frames.transpose(0, 2, 1, 3), 256).shape == (2, 341, 256, 3)
    crop = centre_crop(ours)
    ref_crop = TF.center_crop(torch.from_numpy(ours).permute(0, 3, 1, 2), [224]).permute(0, 2, 3, 1).numpy()
    assert_same(crop, ref_crop)


def test_chunks_are_bounded(videos):
    dec = VideoDecoder(str(videos["vfr"]), 25.0, chunk=8)
    dec.open()
    sizes = [len(c) for c in dec.chunks()]
    assert sum(sizes) == dec.timing.num_grid_frames == 55
    assert max(sizes) <= 8 + 4  # a chunk ends once it holds `chunk` frames (+ repeats of the last: 5 fps)


@pytest.mark.parametrize("name,message", [
    ("zero", "cannot open: Invalid data"), ("text", "cannot open: Invalid data"),
    ("truncated", "truncated or corrupt"), ("audio_only", "no video stream (an audio-only file)")])
def test_bad_files_give_one_line_errors(videos, name, message):
    with pytest.raises(DecodeError) as err:
        decode_all(videos[name])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_frames_too_long_after_resizing_fail_before_decoding(tmp_path, capsys):
    """A 2x1000 video would be 256x128000 (98 MB a frame) after resizing: it fails, in one line."""
    from clipae.decoding import decode
    from clipae.cli import extract_main as main
    thin = videogen.make_video(tmp_path / "thin.mp4", duration=1.0, size=(2, 1000), audio=None)
    decoder = VideoDecoder(str(thin), 25.0)
    with pytest.raises(DecodeError, match=r"frames of 2x1000 would be 256x128000 with the short side at 256; the long "
                                          r"side is limited to 1024 \(aspect ratio up to 4:1\)"):
        decoder.open()
    assert decoder._times is None          # refused before the frames were even listed
    rc = main([str(thin), str(tmp_path / "out"), "--stream-module", "toy_streams", "--streams", "toy_colour", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 1 and "failed thin: frames of 2x1000 would be 256x128000" in out
    # exactly at the limit: 4:1 decodes to 1024x256
    wide = videogen.make_video(tmp_path / "wide.mp4", duration=0.5, size=(256, 64), audio=None)
    frames = np.concatenate(list(VideoDecoder(str(wide), 25.0).chunks()))
    assert frames.shape[1:] == (256, 1024, 3) and decode.MAX_LONG_SIDE == 1024


def test_source_frames_over_the_pixel_limit_fail(monkeypatch, videos):
    from clipae.decoding import decode
    monkeypatch.setattr(decode, "MAX_SOURCE_PIXELS", 96 * 64 - 1)
    with pytest.raises(DecodeError, match="frames of 96x64 pixels exceed the limit of 6143 pixels"):
        VideoDecoder(str(videos["plain"]), 25.0).open()
