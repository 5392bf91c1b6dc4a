"""Audio: downmix, 16 kHz, windows centred on snippet centres on the video's clock, zero padding."""
from pathlib import Path

import av
import numpy as np
import pytest

import videogen
from clipae.decoding.audio import AudioReader
from clipae.decoding.decode import probe
from clipae.core.grid import SnippetGrid

DATA = Path(__file__).parent / "data" / "videos"
WINDOW = 15360


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    return {
        "surround": videogen.make_video(d / "surround.mp4", duration=2.0, audio="5.1", audio_rate=16000),
        "stereo": videogen.make_video(d / "stereo.mp4", duration=2.0, audio="stereo", audio_rate=16000),
        "late": videogen.make_video(d / "late.mp4", duration=3.0, audio="mono", audio_rate=16000,
                                    audio_duration=1.0, audio_delay=1.0),
        "long_audio": videogen.make_video(d / "long_audio.mp4", duration=1.0, audio="mono", audio_duration=3.0),
        "silent_video": videogen.make_video(d / "silent_video.mp4", duration=1.0, audio=None),
    }


def read_windows(path, centres, batch=3):
    reader = AudioReader(str(path), probe(str(path)))
    try:
        return reader, np.concatenate([reader.windows(centres[i:i + batch], WINDOW) for i in range(0, len(centres), batch)])
    finally:
        reader.close()


def reference_windows(mono: np.ndarray, centres: np.ndarray, offset_s: float = 0.0) -> np.ndarray:
    """Independent: cut windows out of the whole track held in memory, zero-padded."""
    padded = np.concatenate([np.zeros(10 * WINDOW, np.float32), mono, np.zeros(10 * WINDOW, np.float32)])
    starts = np.round((centres - offset_s) * 16000).astype(int) - WINDOW // 2 + 10 * WINDOW
    return np.stack([padded[s:s + WINDOW] for s in starts])


@pytest.mark.parametrize("name,channels", [("surround", 6), ("stereo", 2)])
def test_downmix_is_the_mean_of_all_channels(videos, name, channels):
    assert probe(str(videos[name])).audio_channels == channels
    every = videogen.raw_audio(videos[name], channels)          # (samples, channels), already 16 kHz
    centres = SnippetGrid().centre_s(np.arange(4))
    reader, ours = read_windows(videos[name], centres)
    assert reader.has_audio
    np.testing.assert_allclose(ours, reference_windows(every.mean(axis=1), centres), atol=1e-6)
    assert np.abs(ours).max() > 0.1


def test_windows_follow_the_video_clock_when_audio_starts_late(videos):
    """Audio from 1.0 s to 2.0 s of a 3 s video: silence around it, the tone inside."""
    centres = (np.arange(12) * 8 + 8) / 25.0   # stride 8 frames: 0.32 s .. 3.84 s (past the end)
    reader, ours = read_windows(videos["late"], centres, batch=5)
    # the raw track's first sample plays at the audio stream's start time: put it on the video's clock
    tone = videogen.raw_audio(videos["late"])[:, 0]
    with av.open(str(videos["late"])) as c:
        audio, video = c.streams.audio[0], c.streams.video[0]
        offset = float(audio.start_time * audio.time_base) - float(video.start_time * video.time_base)
    assert offset > 0.9
    np.testing.assert_allclose(ours, reference_windows(tone, centres, offset_s=offset), atol=2e-3)
    rms = np.sqrt((ours ** 2).mean(axis=1))
    assert rms[0] == 0 and rms[-1] == 0 and rms[4] > 0.05   # 0.32 s, 3.84 s silent; 1.6 s tone


def test_audio_longer_than_the_video_is_cut_at_the_grid(videos):
    grid = SnippetGrid()
    centres = grid.centre_s(np.arange(grid.num_snippets(25)))  # the 1 s video: 2 snippets
    reader, ours = read_windows(videos["long_audio"], centres)
    assert ours.shape == (2, WINDOW) and reader.has_audio
    assert np.abs(ours[1]).max() > 0.05   # the window past the video's end still holds audio


def test_no_audio_track(videos):
    reader, ours = read_windows(videos["silent_video"], np.array([0.32, 0.96]))
    assert not reader.has_audio and not ours.any()


def test_sample_video_44k_to_16k():
    path = DATA / "v_ZNVhz7ctTq0.mp4"
    centres = SnippetGrid().centre_s(np.arange(22))
    reader, ours = read_windows(path, centres, batch=8)
    ref = videogen.raw_audio(path, 1, rate=16000)[:, 0]   # ffmpeg's default resampler: close, not equal
    expected = reference_windows(ref, centres)
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(ours, expected)]
    assert min(corr) > 0.99
