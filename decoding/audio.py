"""Audio: a file's first audio track as 16 kHz mono float32, cut into windows on the video's grid.

ffmpeg (the ``imageio-ffmpeg`` binary, driven through ``ffmpeg-python``) decodes the track and
streams it through a pipe; :class:`AudioReader` keeps only the samples the next windows need,
so memory does not grow with the video's length. The filter chain:

- ``aresample=async=1:first_pts=0`` places every sample at its timestamp (a track that starts
  late or has gaps is padded with silence), so output sample ``j`` sits at
  ``container_start + j / 16000`` in the file's timeline;
- ``pan``: the mean of all channels, whatever the layout (what the reference VGGish
  ``vggish_input.wavfile_to_examples`` does with ``np.mean(data, axis=1)``);
- ``aresample=16000`` with the SoX resampler.

A snippet's window is ``audio_window`` samples centred on the snippet's centre on the *video's*
clock; samples before the audio starts or after it ends are zeros, so audio that is longer or
shorter than the video still gives exactly one window per snippet.
"""
from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass

import ffmpeg
import imageio_ffmpeg
import numpy as np

from .decode import InputError, MediaInfo

READ_BYTES = 1 << 16


@dataclass(frozen=True)
class AudioSettings:
    """Everything about audio decoding that changes the numbers (part of ``config_hash``)."""

    sample_rate: int = 16000
    downmix: str = "mean of channels"
    resampler: str = "soxr"


class AudioError(InputError):
    """The audio track exists but cannot be decoded."""


def ffmpeg_command(path: str, channels: int, settings: AudioSettings) -> list[str]:
    """The ffmpeg command line that writes the mono track as raw float32 to stdout."""
    gain = repr(1.0 / channels)
    mix = "+".join(f"{gain}*c{c}" for c in range(channels))
    chain = ",".join([
        "aresample=async=1:first_pts=0",
        f"pan=mono|c0={mix}",
        f"aresample={settings.sample_rate}:resampler={settings.resampler}",
    ])
    out = ffmpeg.input(str(path)).output("pipe:", map="0:a:0", af=chain, format="f32le",
                                          acodec="pcm_f32le", ac=1, ar=settings.sample_rate)
    return ffmpeg.compile(out.global_args("-nostdin", "-hide_banner", "-loglevel", "error"),
                          cmd=imageio_ffmpeg.get_ffmpeg_exe())


class AudioReader:
    """Windows of a file's audio, asked for in time order.

    ``info`` comes from :func:`clipae.decoding.decode.probe`; ``has_audio`` is false when the
    file has no audio track or the track holds no sample, and every window is then zeros.
    """

    def __init__(self, path: str, info: MediaInfo, settings: AudioSettings = AudioSettings()) -> None:
        self.settings = settings
        self.rate = settings.sample_rate
        # video time of output sample 0 (the video's first frame is time 0)
        self.offset_s = info.container_start_s - info.video_start_s
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0          # sample index of self._buf[0]
        self._pending = b""          # bytes of an incomplete float at the end of a read
        self._eof = info.audio_channels == 0
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        if not self._eof:
            self._stderr = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(ffmpeg_command(path, info.audio_channels, settings),
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr)
            self._fill(1)
        self.has_audio = len(self._buf) > 0

    @property
    def samples_end(self) -> int:
        return self._buf_start + len(self._buf)

    def _fill(self, until: int) -> None:
        """Read from ffmpeg until sample ``until`` is buffered or the track ends."""
        parts = [self._buf]
        end = self.samples_end
        while end < until and not self._eof:
            data = self._pending + self._proc.stdout.read(READ_BYTES)
            if len(data) == len(self._pending):
                self._finish()
                break
            usable = len(data) - len(data) % 4
            self._pending = data[usable:]
            chunk = np.frombuffer(data[:usable], dtype="<f4")
            parts.append(chunk)
            end += len(chunk)
        if len(parts) > 1:
            self._buf = np.concatenate(parts)

    def _finish(self) -> None:
        self._eof = True
        if self._proc.wait() != 0:
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            raise AudioError(f"audio decoding failed: {lines[-1] if lines else f'ffmpeg exit {self._proc.returncode}'}")

    def windows(self, centres_s: np.ndarray, length: int) -> np.ndarray:
        """``(B, length)`` float32 windows centred on ``centres_s`` (video seconds, non-decreasing)."""
        starts = np.round((np.asarray(centres_s, np.float64) - self.offset_s) * self.rate).astype(np.int64) - length // 2
        out = np.zeros((len(starts), length), np.float32)
        if not self.has_audio or len(starts) == 0:
            return out
        if max(int(starts[0]), 0) < self._buf_start:
            raise ValueError("audio windows must be asked for in time order")
        self._fill(int(starts[-1]) + length)
        for row, s in zip(out, starts):
            lo, hi = max(s, self._buf_start), min(s + length, self.samples_end)
            if lo < hi:
                row[lo - s:hi - s] = self._buf[lo - self._buf_start:hi - self._buf_start]
        keep_from = max(int(starts[-1]), self._buf_start)  # later windows start no earlier
        self._buf = self._buf[keep_from - self._buf_start:]
        self._buf_start = keep_from
        return out

    def close(self) -> None:
        """Stop ffmpeg (audio past the video's end is never read)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc.stdout.close()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
