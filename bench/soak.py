"""``clipae-bench soak OUT``: extraction under random ``kill -9`` / SIGINT / SIGTERM, checked.

Makes a few hundred tiny videos (good ones, and broken ones: truncated, garbage, empty,
audio-only), extracts them once without interruption as the reference, then, for each decoding
mode (``--modes``: decode workers on or off, network batches shared by videos or not), runs
``clipae-extract`` as a process and interrupts it ``--interruptions`` times at random moments
with a random signal, resuming each time, until a run completes. After every interruption it
checks that

- the process ended as the signal asks (130 for SIGINT, 143 for SIGTERM, killed for SIGKILL)
  within ``--stop-timeout`` seconds, else it counts a *hang*;
- the manifest reads, every ``ok`` line's feature files load with shape ``(num_snippets, dim)``,
  no temporary file is left that the next run does not clean, and no good video is ``failed``;

and at the end that every good video is ``ok`` with features equal to the reference bit for bit
(else a *mismatch*) and every broken one ``failed``. It prints the figures and exits 1 when
any check failed. The streams are :mod:`clipae.bench.soak_stream` (cheap, deterministic).

    python -m clipae.bench.soak OUT [--videos 300] [--interruptions 10] [--modes 0:shared,2:shared,...]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from ..core.errors import WorkFailed
from ..pipeline import manifest as mf

STREAMS = "soak_colour,soak_rms"
#: expected exit status of clipae-extract for each signal (a SIGKILLed process reports -9)
EXPECTED_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}
#: (seconds, width, height, audio) of the distinct good videos; copies of them fill the rest
TEMPLATES = [(0.6, 64, 48, False), (1.0, 64, 48, True), (1.5, 48, 64, False), (2.0, 64, 48, True),
             (0.8, 80, 48, True), (1.2, 64, 64, False), (2.5, 64, 48, True), (0.4, 64, 48, False)]
BROKEN_KINDS = ("truncated", "garbage", "empty", "audio_only")


class SoakError(WorkFailed):
    """The soak cannot run as asked (one line)."""


@dataclass
class Figures:
    videos: int = 0
    good: int = 0
    broken: int = 0
    modes: list[str] = field(default_factory=list)
    runs: int = 0
    signals: dict[str, int] = field(default_factory=dict)  # sent, by name
    ended_before_signal: int = 0
    hangs: int = 0
    bad_exits: int = 0
    inconsistent: int = 0
    mismatches: int = 0
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.hangs or self.bad_exits or self.inconsistent or self.mismatches)

    def lines(self) -> list[str]:
        sent = ", ".join(f"{n} {k}" for k, n in sorted(self.signals.items())) or "none"
        return [*(f"problem: {p}" for p in self.problems[:20]),
                f"{self.videos} videos ({self.good} good, {self.broken} broken), modes {', '.join(self.modes)}: "
                f"{self.runs} runs, signals sent: {sent} ({self.ended_before_signal} runs ended first); "
                f"hangs {self.hangs}, bad exits {self.bad_exits}, inconsistent {self.inconsistent}, "
                f"mismatches {self.mismatches}; {self.wall_s:.1f} s"]


# --------------------------------------------------------------------------- videos

def _ffmpeg(*args: str) -> None:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise SoakError(f"ffmpeg failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")


def _template(path: Path, seconds: float, width: int, height: int, audio: bool) -> None:
    args = ["-f", "lavfi", "-i", f"testsrc=s={width}x{height}:r=25:d={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=16000:duration={seconds}"]
    args += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10"]
    if audio:
        args += ["-c:a", "aac"]
    _ffmpeg(*args, str(path))


def make_videos(folder: Path, count: int, broken_fraction: float, rng: random.Random) -> tuple[list[str], list[str]]:
    """``count`` videos in ``folder``; returns (good ids, broken ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    templates = folder.parent / "templates"
    templates.mkdir(exist_ok=True)
    made = []
    for i, spec in enumerate(TEMPLATES):
        path = templates / f"t{i}.mp4"
        if not path.exists():
            _template(path, *spec)
        made.append(path)
    audio_only = templates / "audio_only.mp4"
    if not audio_only.exists():
        _ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:sample_rate=16000:duration=1", "-c:a", "aac", str(audio_only))
    broken_count = max(1, round(count * broken_fraction)) if count > 1 else 0
    kinds = [BROKEN_KINDS[i % len(BROKEN_KINDS)] for i in range(broken_count)] + [None] * (count - broken_count)
    rng.shuffle(kinds)
    good, broken = [], []
    for i, kind in enumerate(kinds):
        video_id = f"v{i:04d}"
        dest = folder / f"{video_id}.mp4"
        source = made[i % len(made)]
        if kind is None:
            shutil.copyfile(source, dest)
            good.append(video_id)
            continue
        if kind == "truncated":
            data = source.read_bytes()
            dest.write_bytes(data[:len(data) // 3])
        elif kind == "garbage":
            dest.write_bytes(rng.randbytes(2048))
        elif kind == "empty":
            dest.write_bytes(b"")
        else:
            shutil.copyfile(audio_only, dest)
        broken.append(video_id)
    return good, broken


# --------------------------------------------------------------------------- runs

def extract_command(videos: Path, out: Path, workers: int, shared: bool) -> list[str]:
    cmd = [sys.executable, "-m", "clipae", "extract", str(videos), str(out),
           "--stream-module", "clipae.bench.soak_stream", "--streams", STREAMS, "--batch-size", "4",
           "--decode-workers", str(workers), "--quiet"]
    return cmd if shared else [*cmd, "--per-video-batches"]


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _lines(out: Path) -> int:
    try:
        return (out / mf.MANIFEST_NAME).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def check_output(out: Path, good: set[str], figures: Figures, when: str) -> dict[str, dict]:
    """The manifest's last line per video after a run ended; problems are counted as inconsistent."""
    path = out / mf.MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        records = mf.read_manifest(path)
    except (mf.ManifestError, OSError) as e:
        figures.inconsistent += 1
        figures.problems.append(f"{when}: {e}")
        return {}
    for vid, rec in records.items():
        if rec["status"] == "failed":
            if vid in good:
                figures.inconsistent += 1
                figures.problems.append(f"{when}: good video {vid} failed: {rec.get('error')}")
            continue
        for name, entry in rec["streams"].items():
            try:
                shape = np.load(out / entry["path"], mmap_mode="r", allow_pickle=False).shape
            except (OSError, ValueError) as e:
                shape = str(e)
            if shape != (rec["num_snippets"], entry["dim"]):
                figures.inconsistent += 1
                figures.problems.append(f"{when}: {vid} {name}: {shape}")
    return records


def run_once(cmd: list[str], out: Path, figures: Figures, signum: int | None, rng: random.Random,
             stop_timeout: float, run_timeout: float, remaining: int) -> int | None:
    """One clipae-extract process, interrupted with ``signum`` (``None``: let it finish); its exit status."""
    figures.runs += 1
    start_lines = _lines(out)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + run_timeout
    try:
        if signum is not None:
            target = _lines(out) + rng.randint(1, max(1, remaining // 2))
            while proc.poll() is None and _lines(out) < target and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.2))
            if proc.poll() is not None:
                figures.ended_before_signal += 1
                return proc.wait()
            name = signal.Signals(signum).name
            figures.signals[name] = figures.signals.get(name, 0) + 1
            proc.send_signal(signum)
            deadline = time.monotonic() + stop_timeout
        _, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        figures.hangs += 1
        figures.problems.append(f"{' '.join(cmd[-6:])}: still running ({'signal ' + str(signum) if signum else 'no signal'})")
        return None
    if (signum is not None and proc.returncode in (0, 1, -signum)
            and _lines(out) - start_lines >= remaining and "Traceback" not in err):
        # every video was done and the summary printed: the signal came while the interpreter shut
        # down (Python gives the default handlers back there), a normal end of the work
        figures.ended_before_signal += 1
        figures.signals[signal.Signals(signum).name] -= 1   # counted as ended first, not as a stop
        return proc.returncode
    if signum is not None and proc.returncode != EXPECTED_EXIT[signum]:
        figures.bad_exits += 1
        figures.problems.append(f"exit {proc.returncode} after {signal.Signals(signum).name}: {err.strip()[-300:]}")
    if signum is None and proc.returncode not in (0, 1):
        figures.bad_exits += 1
        figures.problems.append(f"exit {proc.returncode} of an uninterrupted run: {err.strip()[-300:]}")
    return proc.returncode


def compare(out: Path, reference: Path, good: list[str], broken: list[str], figures: Figures, mode: str) -> None:
    records, ref = mf.read_manifest(out / mf.MANIFEST_NAME), mf.read_manifest(reference / mf.MANIFEST_NAME)
    for vid in good:
        rec = records.get(vid)
        if rec is None or rec["status"] != "ok":
            figures.mismatches += 1
            figures.problems.append(f"{mode}: {vid} is {rec and rec['status']}")
            continue
        for name, entry in ref[vid]["streams"].items():
            mine = rec["streams"].get(name)
            if mine is None or not np.array_equal(np.load(out / mine["path"]), np.load(reference / entry["path"])):
                figures.mismatches += 1
                figures.problems.append(f"{mode}: {vid} {name} differs from the uninterrupted run")
    for vid in broken:
        if (records.get(vid) or {}).get("status") != "failed":
            figures.mismatches += 1
            figures.problems.append(f"{mode}: broken video {vid} is not recorded as failed")


def parse_modes(text: str) -> list[tuple[int, bool]]:
    modes = []
    for part in text.split(","):
        workers, _, batches = part.strip().partition(":")
        if not workers.isdigit() or batches not in ("shared", "per-video"):
            raise SoakError(f"--modes {part!r}: expected WORKERS:shared or WORKERS:per-video")
        modes.append((int(workers), batches == "shared"))
    return modes


def soak(out: Path, videos: int = 300, interruptions: int = 10, modes: str = "0:shared,2:shared,0:per-video,2:per-video",
         broken_fraction: float = 0.15, seed: int = 0, stop_timeout: float = 30.0, run_timeout: float = 900.0) -> Figures:
    started = time.monotonic()
    rng = random.Random(seed)
    parsed = parse_modes(modes)
    figures = Figures(modes=[m.strip() for m in modes.split(",")])
    folder = out / "videos"
    if folder.exists():
        shutil.rmtree(folder)
    good, broken = make_videos(folder, videos, broken_fraction, rng)
    figures.videos, figures.good, figures.broken = videos, len(good), len(broken)
    reference = out / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    run_once(extract_command(folder, reference, 0, True), reference, figures, None, rng, stop_timeout, run_timeout, 0)
    check_output(reference, set(good), figures, "reference")
    for workers, shared in parsed:
        mode = f"{workers}:{'shared' if shared else 'per-video'}"
        run_dir = out / "runs" / mode.replace(":", "-")
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = extract_command(folder, run_dir, workers, shared)
        for _ in range(interruptions):
            remaining = videos - _lines(run_dir)
            run_once(cmd, run_dir, figures, rng.choice(list(EXPECTED_EXIT)), rng, stop_timeout, run_timeout, remaining)
            check_output(run_dir, set(good), figures, f"{mode} after a signal")
        run_once(cmd, run_dir, figures, None, rng, stop_timeout, run_timeout, 0)   # the rerun completes the rest
        check_output(run_dir, set(good), figures, f"{mode} final")
        for tmp in (run_dir / "features").glob("*/.*.tmp"):
            figures.inconsistent += 1
            figures.problems.append(f"{mode} final: temporary file left: {tmp}")
        compare(run_dir, reference, good, broken, figures, mode)
    figures.wall_s = time.monotonic() - started
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clipae-bench soak", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="working folder (videos, reference, runs/)")
    p.add_argument("--videos", type=int, default=300, help="videos to make (default: %(default)s)")
    p.add_argument("--broken-fraction", type=float, default=0.15, help="share of broken videos (default: %(default)s)")
    p.add_argument("--interruptions", type=int, default=10, help="signals per mode (default: %(default)s)")
    p.add_argument("--modes", default="0:shared,2:shared,0:per-video,2:per-video",
                   help="decode workers and batch sharing per mode (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="videos, moments and signals (default: %(default)s)")
    p.add_argument("--stop-timeout", type=float, default=30.0,
                   help="seconds a signalled process may take to end before it counts as a hang (default: %(default)s)")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.videos < 2 or not 0 < args.broken_fraction < 1 or args.interruptions < 0:
        p.error("--videos must be at least 2, --broken-fraction within (0, 1), --interruptions 0 or more")
    try:
        figures = soak(args.out, args.videos, args.interruptions, args.modes, args.broken_fraction, args.seed,
                       args.stop_timeout)
    except (SoakError, OSError) as e:
        print(f"clipae-bench soak: error: {e}", file=sys.stderr)
        return 2
    for line in figures.lines():
        print(line)
    if args.json:
        args.json.write_text(json.dumps({**asdict(figures), "passed": figures.passed}, indent=1), encoding="utf-8")
    return 0 if figures.passed else 1


if __name__ == "__main__":
    sys.exit(main())
