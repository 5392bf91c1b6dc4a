"""Small test videos made with the ffmpeg binary of ``imageio-ffmpeg`` (lavfi sources)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
#: per-channel sine frequencies (Hz) and amplitudes of the generated audio
TONES = [(220, 0.1), (330, 0.2), (440, 0.3), (550, 0.05), (660, 0.4), (770, 0.15)]
LAYOUTS = {"mono": 1, "stereo": 2, "5.1": 6}


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *map(str, args)], check=True)


def _audio_source(layout: str, duration: float, rate: int) -> str:
    chans = "|".join(f"{a}*sin(2*PI*{f}*t)" for f, a in TONES[:LAYOUTS[layout]])
    return f"aevalsrc={chans}:s={rate}:c={layout}:d={duration}"


def make_video(path, *, duration: float = 2.0, size: tuple[int, int] = (64, 48), fps: float = 25,
               audio: str | None = "mono", audio_duration: float | None = None, audio_delay: float = 0.0,
               audio_rate: int = 44100, rotate: int = 0, faststart: bool = False) -> Path:
    """testsrc video (H.264) with an optional AAC sine track (``mono``, ``stereo`` or ``5.1``)."""
    path = Path(path)
    args = ["-f", "lavfi", "-i", f"testsrc=s={size[0]}x{size[1]}:r={fps}:d={duration}"]
    if audio:
        if audio_delay:
            args += ["-itsoffset", str(audio_delay)]
        args += ["-f", "lavfi", "-i", _audio_source(audio, audio_duration or duration, audio_rate)]
    args += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "128k"]
    if faststart:
        args += ["-movflags", "+faststart"]
    if rotate:
        tmp = path.with_name("unrotated-" + path.name)
        ffmpeg(*args, tmp)
        ffmpeg("-display_rotation", rotate, "-i", tmp, "-c", "copy", path)
        tmp.unlink()
    else:
        ffmpeg(*args, path)
    return path


def make_videos(folder: Path, durations: list[float], audio: str = "mono") -> Path:
    """``video0.mp4``, ``video1.mp4``, ... of these durations in ``folder``; every other one has ``audio``."""
    for i, seconds in enumerate(durations):
        make_video(folder / f"video{i}.mp4", duration=seconds, audio=audio if i % 2 else None)
    return folder


def make_colour_video(path, segments: list[tuple[str, float, float]], size: tuple[int, int] = (64, 48)) -> Path:
    """Solid colours one after another: ``[(colour, seconds, fps), ...]``; different fps make it VFR."""
    inputs = ";".join(f"color=c={c}:s={size[0]}x{size[1]}:r={fps}:d={d}[v{i}]" for i, (c, d, fps) in enumerate(segments))
    graph = f"{inputs};{''.join(f'[v{i}]' for i in range(len(segments)))}concat=n={len(segments)}:v=1:a=0"
    ffmpeg("-f", "lavfi", "-i", graph, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-qp", "0",
           "-fps_mode", "passthrough", path)
    return Path(path)


def make_audio_only(path, duration: float = 2.0) -> Path:
    ffmpeg("-f", "lavfi", "-i", _audio_source("mono", duration, 44100), "-c:a", "aac", path)
    return Path(path)


def make_truncated(path, duration: float = 4.0) -> Path:
    """A video whose second half is cut off (index at the front, so it still opens)."""
    full = Path(path).with_name("full-" + Path(path).name)
    make_video(full, duration=duration, size=(96, 64), audio=None, faststart=True)
    data = full.read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    full.unlink()
    return Path(path)


def rgb_frames(path, size: tuple[int, int] | None = None, vf: str | None = None) -> np.ndarray:
    """Frames as ffmpeg itself decodes them (rotation applied), ``(n, H, W, 3)`` uint8."""
    args = [FFMPEG, "-v", "error", "-nostdin", "-i", str(path)]
    if vf:
        args += ["-vf", vf]
    raw = subprocess.run(args + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    w, h = size
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def raw_audio(path, channels: int | None = None, rate: int | None = None) -> np.ndarray:
    """The first audio track as float32 as ffmpeg decodes it, ``(samples, channels)``."""
    args = [FFMPEG, "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0"]
    if rate:
        args += ["-ar", str(rate)]
    raw = subprocess.run(args + ["-f", "f32le", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.float32).reshape(-1, channels or 1)
