"""The demo's embedded dataset: small rendered videos with sound and known action segments.

Every video shows a slowly drifting, low-contrast background with quiet noise on the sound track.
One kind of action appears in one or more segments; each kind has its own shape, colour, motion
and sound, so both the visual and the audio streams can tell the kinds apart:

=================  ==========================================  ====================================
kind               picture                                     sound
=================  ==========================================  ====================================
``BouncingBall``   a red disc bouncing up and down             a 440 Hz tone, louder at each bounce
``SlidingSquare``  a green square sliding left to right        a 600 → 1200 Hz chirp per slide
``SpinningBar``    a blue bar turning about the frame centre   bursts of white noise, 4 per second
=================  ==========================================  ====================================

Segments start and end on frame boundaries, so the ground truth (ActivityNet schema, DESIGN.md)
is exact. Everything is drawn from one seed: the same :class:`DemoDatasetSpec` gives the same
ground truth and the same video bytes. Videos are encoded (H.264 + AAC in MP4) by the ffmpeg
binary of ``imageio-ffmpeg``.

    python -m clipae.demo.data OUT [--train 9 --test 5 --seed 0]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..core.errors import WorkFailed
from ..core.fsio import write_text_atomic

TRAIN_SUBSET = "training"
TEST_SUBSET = "testing"
GROUND_TRUTH_NAME = "ground_truth.json"
SPEC_NAME = "dataset.json"
VERSION = "clipae-demo-1"


class DemoDataError(WorkFailed, RuntimeError):
    """The dataset cannot be rendered (one line)."""


@dataclass(frozen=True)
class DemoDatasetSpec:
    """Size and content of the embedded dataset; K = ``len(kinds)``."""

    num_train: int = 9
    num_test: int = 5
    duration_s: tuple[float, float] = (5.0, 7.0)     # each video's length, drawn uniformly
    instances: tuple[int, int] = (1, 2)              # action segments per video, inclusive
    instance_s: tuple[float, float] = (1.5, 2.0)     # each segment's length
    min_gap_s: float = 0.8                            # background between segments and at the ends
    width: int = 128      # square: extraction resizes the short side to 256, so 4:3 frames would
    height: int = 128     # cost a third more optical flow for nothing
    fps: int = 25
    sample_rate: int = 16000
    seed: int = 0
    kinds: tuple[str, ...] = ("BouncingBall", "SlidingSquare", "SpinningBar")

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in ACTION_KINDS]
        if unknown:
            raise DemoDataError(f"unknown action kind(s) {unknown}; known: {', '.join(ACTION_KINDS)}")
        if self.num_train < 1 or self.num_test < 1:
            raise DemoDataError("the demo dataset needs at least one training and one testing video")
        lo, hi = self.instances
        if not 1 <= lo <= hi:
            raise DemoDataError(f"instances must be 1 <= min <= max, got {self.instances}")
        if self.duration_s[0] < _span_s(lo, self.instance_s[1], self.min_gap_s):
            raise DemoDataError(f"videos of {self.duration_s[0]} s cannot hold {lo} segment(s) of up to "
                                f"{self.instance_s[1]} s with {self.min_gap_s} s gaps")

    def as_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _span_s(segments: int, length_s: float, gap_s: float) -> float:
    """Shortest video holding ``segments`` segments of ``length_s`` with gaps around each."""
    return segments * length_s + (segments + 1) * gap_s


# --------------------------------------------------------------------------------------------
# The action kinds: a picture and a sound, both functions of the time since the segment began.

@dataclass(frozen=True)
class ActionKind:
    """``draw(canvas (H, W, 3) float32 in [0, 1], t_s, place)`` paints one frame in place;
    ``sound(t_s (S,) float64) -> (S,) float32`` is the sound track during the segment.
    ``place`` is a per-segment random position in [0.25, 0.75] (fraction of the width)."""

    label: str
    colour: tuple[float, float, float]
    draw: Callable[[np.ndarray, float, float], None]
    sound: Callable[[np.ndarray], np.ndarray]


def _grid(canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = canvas.shape[:2]
    return np.mgrid[0:h, 0:w].astype(np.float32)


def _draw_ball(canvas: np.ndarray, t: float, place: float) -> None:
    h, w = canvas.shape[:2]
    yy, xx = _grid(canvas)
    r = 0.12 * h
    cy = (h - r - 2) - abs(math.sin(math.pi * 1.5 * t)) * 0.55 * h
    canvas[(yy - cy) ** 2 + (xx - place * w) ** 2 <= r * r] = ACTION_KINDS["BouncingBall"].colour


def _sound_ball(t: np.ndarray) -> np.ndarray:
    bounce = 1.0 - np.abs(np.sin(np.pi * 1.5 * t))         # 1 at each bounce
    return (0.25 + 0.35 * bounce ** 4) * np.sin(2 * np.pi * 440.0 * t)


def _draw_square(canvas: np.ndarray, t: float, place: float) -> None:
    h, w = canvas.shape[:2]
    side = int(0.25 * h)
    x0 = int(((t / 1.25 + place) % 1.0) * (w - side))
    y0 = int(0.5 * (h - side))
    canvas[y0:y0 + side, x0:x0 + side] = ACTION_KINDS["SlidingSquare"].colour


def _sound_square(t: np.ndarray) -> np.ndarray:
    period = 1.25
    tau = t % period                                         # one chirp per slide
    phase = 2 * np.pi * (600.0 * tau + 0.5 * (600.0 / period) * tau ** 2)
    return 0.4 * np.sin(phase)


def _draw_bar(canvas: np.ndarray, t: float, place: float) -> None:
    h, w = canvas.shape[:2]
    yy, xx = _grid(canvas)
    angle = 2 * np.pi * 0.75 * t
    cx, cy = place * w, 0.5 * h
    along = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    across = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
    canvas[(np.abs(along) <= 0.35 * h) & (np.abs(across) <= 0.05 * h)] = ACTION_KINDS["SpinningBar"].colour


def _sound_bar(t: np.ndarray) -> np.ndarray:
    # deterministic white noise (seeded by the sample count), gated into 0.1 s bursts at 4 Hz
    noise = np.random.default_rng(len(t)).uniform(-1.0, 1.0, len(t))
    return 0.5 * noise * ((t % 0.25) < 0.1)


ACTION_KINDS: dict[str, ActionKind] = {k.label: k for k in (
    ActionKind("BouncingBall", (0.9, 0.15, 0.1), _draw_ball, _sound_ball),
    ActionKind("SlidingSquare", (0.1, 0.8, 0.2), _draw_square, _sound_square),
    ActionKind("SpinningBar", (0.15, 0.3, 0.95), _draw_bar, _sound_bar),
)}


# --------------------------------------------------------------------------------------------
# One video: its plan (drawn from the seed), its frames and its sound track.

@dataclass(frozen=True)
class VideoPlan:
    video_id: str
    subset: str
    label: str
    num_frames: int
    segments: tuple[tuple[int, int], ...]   # [start, end) in frames
    places: tuple[float, ...]               # one horizontal position per segment
    seed: int                               # for the background and noise of this video

    def duration_s(self, fps: int) -> float:
        return self.num_frames / fps

    def annotation(self, fps: int) -> dict:
        return {"subset": self.subset, "duration": self.duration_s(fps),
                "annotations": [{"segment": [s / fps, e / fps], "label": self.label} for s, e in self.segments]}


def plan_dataset(spec: DemoDatasetSpec) -> list[VideoPlan]:
    """Every video's content, drawn from ``spec.seed``: kinds balanced within each subset."""
    rng = np.random.default_rng(spec.seed)
    plans = []
    for subset, count, prefix in ((TRAIN_SUBSET, spec.num_train, "demo_train"), (TEST_SUBSET, spec.num_test, "demo_test")):
        labels = [spec.kinds[i % len(spec.kinds)] for i in range(count)]
        rng.shuffle(labels)
        for i, label in enumerate(labels):
            plans.append(_plan_video(spec, rng, f"{prefix}_{i:03d}", subset, label))
    return plans


def _plan_video(spec: DemoDatasetSpec, rng: np.random.Generator, video_id: str, subset: str, label: str) -> VideoPlan:
    fps = spec.fps
    num_frames = int(round(rng.uniform(*spec.duration_s) * fps))
    n = int(rng.integers(spec.instances[0], spec.instances[1] + 1))
    while n > spec.instances[0] and _span_s(n, spec.instance_s[1], spec.min_gap_s) * fps > num_frames:
        n -= 1  # a short video holds fewer segments
    lengths = np.round(rng.uniform(*spec.instance_s, size=n) * fps).astype(int)
    gap = int(math.ceil(spec.min_gap_s * fps))
    free = num_frames - int(lengths.sum()) - gap * (n + 1)   # >= 0 by DemoDatasetSpec's check
    extra = np.floor(rng.dirichlet(np.ones(n + 1)) * free).astype(int)
    segments, t = [], 0
    for k in range(n):
        t += gap + int(extra[k])
        segments.append((t, t + int(lengths[k])))
        t += int(lengths[k])
    places = tuple(float(p) for p in rng.uniform(0.25, 0.75, size=n))
    return VideoPlan(video_id, subset, label, num_frames, tuple(segments), places, int(rng.integers(2 ** 31)))


def render_frames(plan: VideoPlan, spec: DemoDatasetSpec) -> Iterator[np.ndarray]:
    """The video's frames, ``(H, W, 3)`` uint8 RGB, one per ``1 / fps`` s."""
    h, w = spec.height, spec.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(plan.seed)
    tint = rng.uniform(0.3, 0.5, size=3).astype(np.float32)
    texture = rng.normal(0.0, 0.02, size=(h, w, 1)).astype(np.float32)
    kind = ACTION_KINDS[plan.label]
    for f in range(plan.num_frames):
        t = f / spec.fps
        wave_ = 0.06 * np.sin(2 * np.pi * (xx / w * 1.5 + yy / h * 0.7 + 0.08 * t))
        canvas = tint[None, None, :] + wave_[..., None] + np.roll(texture, int(4 * t), axis=1)  # drifting texture
        for (s, e), place in zip(plan.segments, plan.places):
            if s <= f < e:
                kind.draw(canvas, (f - s) / spec.fps, place)
        yield (np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_sound(plan: VideoPlan, spec: DemoDatasetSpec) -> np.ndarray:
    """The sound track, ``(S,)`` float32 in [-1, 1] at ``spec.sample_rate``, as long as the video."""
    sr = spec.sample_rate
    n = int(round(plan.num_frames / spec.fps * sr))
    rng = np.random.default_rng(plan.seed + 1)
    audio = 0.02 * np.cumsum(rng.normal(0.0, 1.0, n)) / math.sqrt(sr)   # quiet brown noise
    audio += 0.01 * rng.normal(0.0, 1.0, n)
    kind = ACTION_KINDS[plan.label]
    for s, e in plan.segments:
        a, b = int(round(s / spec.fps * sr)), int(round(e / spec.fps * sr))
        audio[a:b] += kind.sound(np.arange(b - a) / sr)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes((audio * 32767.0).astype("<i2").tobytes())


def encode_video(plan: VideoPlan, spec: DemoDatasetSpec, dest: Path) -> None:
    """Render ``plan`` and encode it to ``dest`` (MP4, H.264 + AAC), atomically."""
    import imageio_ffmpeg

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".render.") as tmp:
        wav, out = Path(tmp) / "sound.wav", Path(tmp) / "video.mp4"
        _write_wav(wav, render_sound(plan, spec), spec.sample_rate)
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{spec.width}x{spec.height}",
               "-framerate", str(spec.fps), "-i", "-", "-i", str(wav),
               "-map", "0:v", "-map", "1:a",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
               "-c:a", "aac", "-b:a", "64k",
               "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
               "-map_metadata", "-1", "-f", "mp4", str(out)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for frame in render_frames(plan, spec):
                proc.stdin.write(frame.tobytes())
        except BrokenPipeError:
            pass  # ffmpeg stopped early: its error is read below
        finally:
            proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise DemoDataError(f"ffmpeg failed to encode {plan.video_id}: {err.splitlines()[-1] if err else 'no message'}")
        os.replace(out, dest)


# --------------------------------------------------------------------------------------------
# The whole dataset.

@dataclass(frozen=True)
class DemoDataset:
    root: Path
    videos: Path               # folder of ``<video_id>.mp4``
    ground_truth: Path         # ActivityNet-schema json
    plans: tuple[VideoPlan, ...]

    def video_path(self, video_id: str) -> Path:
        return self.videos / f"{video_id}.mp4"

    def subset_ids(self, subset: str) -> list[str]:
        return [p.video_id for p in self.plans if p.subset == subset]


def ground_truth(spec: DemoDatasetSpec, plans: list[VideoPlan]) -> dict:
    taxonomy = [{"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None}]
    taxonomy += [{"nodeId": i + 1, "nodeName": k, "parentId": 0, "parentName": "Root"} for i, k in enumerate(spec.kinds)]
    return {"version": VERSION, "taxonomy": taxonomy,
            "database": {p.video_id: p.annotation(spec.fps) for p in plans}}


def build_dataset(root: str | os.PathLike, spec: DemoDatasetSpec = DemoDatasetSpec(),
                  progress: bool = False) -> DemoDataset:
    """Render the dataset into ``root`` (``videos/``, ``ground_truth.json``, ``dataset.json``).

    A folder already holding this spec's complete dataset is reused as it is; a different spec
    re-renders everything.
    """
    from tqdm import tqdm

    root = Path(root)
    videos = root / "videos"
    plans = plan_dataset(spec)
    data = DemoDataset(root, videos, root / GROUND_TRUTH_NAME, tuple(plans))
    stamp = root / SPEC_NAME
    if (stamp.is_file() and json.loads(stamp.read_text()) == spec.as_json() and data.ground_truth.is_file()
            and all(data.video_path(p.video_id).is_file() for p in plans)):
        return data
    root.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    for plan in tqdm(plans, desc="render demo videos", unit="video", disable=not progress):
        encode_video(plan, spec, data.video_path(plan.video_id))
    _write_json(data.ground_truth, ground_truth(spec, plans))
    _write_json(stamp, spec.as_json())  # written last: its presence means the dataset is complete
    return data


def _write_json(path: Path, obj: dict) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipae.demo.data",
                                description="Render the demo's synthetic videos with sound and their ground truth.")
    p.add_argument("out", help="folder to write videos/, ground_truth.json and dataset.json into")
    p.add_argument("--train", type=int, default=DemoDatasetSpec.num_train, help="training videos")
    p.add_argument("--test", type=int, default=DemoDatasetSpec.num_test, help="testing videos")
    p.add_argument("--seed", type=int, default=DemoDatasetSpec.seed)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        spec = DemoDatasetSpec(num_train=args.train, num_test=args.test, seed=args.seed)
        data = build_dataset(args.out, spec, progress=not args.quiet and sys.stderr.isatty())
    except DemoDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{len(data.plans)} videos in {data.videos}, ground truth in {data.ground_truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
