"""``clipae-bench extract VIDEOS [clipae-extract options]``: how fast and how big extraction is.

Prints, for this machine:

0. start-up: seconds from the imports to the first batch's features (networks built, first batch
   of the first video decoded, the networks on it);
1. matmul FLOP/s of the device (float32, 2048 x 2048), the yardstick for the streams;
2. decoding alone: grid frames per second and times real time, per video and in total; then
   the snippet batches the streams would get (frames and audio), of all videos, cut in a thread
   and in 1 to ``--decode-workers`` worker processes;
3. per stream: snippets per second on real batches of the first video, × real time, peak memory
   while it runs (CUDA ``max_memory_allocated``; on the CPU the sampled resident set of this
   process (PSS), which holds every stream's model), FLOPs per snippet
   (``torch.utils.flop_counter.FlopCounterMode`` on one batch; the I3D counts 55.6 GFLOP per
   16×224² snippet) and the achieved FLOP/s as a fraction of the matmul FLOP/s;
4. ``clipae-extract`` end to end on VIDEOS in a child process (killed after ``--child-timeout``):
   times real time, wall time, peak RSS of the largest process and peak PSS summed over all its
   processes, once per ``--variants`` entry, e.g.
   ``--variants "--decode-workers 0|--decode-workers 2|--per-video-batches"``;
5. peak RSS of ``clipae-extract`` on generated videos of 1 and 10 minutes (``--memory-minutes``),
   and their ratio (goal: at most 1.2: memory must not grow with the video's length).

Streams and their options are those of ``clipae-extract`` (``--streams``, ``--weights``,
``--random-weights``, ``--stream-module``, ...).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..core.dist import Ranks
from ..core.weights import WeightsError
from ..decoding.decode import InputError, VideoDecoder, backends_named
from ..decoding.workers import DecodePool
from ..pipeline.extract import (ExtractionError, ThreadDecoding, batch_size_of, build_extractors, decode_workers_for,
                                open_source, sources_ahead, video_job)
from ..pipeline.extract_cli import config_from_args, parser_for
from .measure import MiB, RSSSampler, count_flops, run_measured
from .streams import matmul_flops, sync

PROG = "clipae-bench extract"


def bench_decode(videos: list[Path], fps: float, decoders: tuple[str, ...]) -> None:
    total_frames, total_s, total_video = 0, 0.0, 0.0
    for path in videos:
        start = time.perf_counter()
        decoder = VideoDecoder(str(path), fps, backends=backends_named(decoders))
        timing = decoder.open()
        frames = sum(len(chunk) for chunk in decoder.chunks())
        decoder.close()
        took = time.perf_counter() - start
        total_frames, total_s, total_video = total_frames + frames, total_s + took, total_video + timing.duration_s
        print(f"  {path.name}: {timing.num_frames} frames at {timing.native_fps:.2f} fps -> {frames} grid frames "
              f"in {took:.2f} s = {frames / took:.0f} frames/s ({decoder.backend})")
    print(f"  total: {total_frames / total_s:.0f} grid frames/s, {total_video / total_s:.1f}x real time")


def bench_startup(config, device: torch.device) -> dict:
    """The first snippet's features, timed from here (torch and clipae imported): the networks
    built with their weights, the first video opened and its first batch decoded, the networks run
    on that batch. Returns the extractors, which the later sections use."""
    t0 = time.perf_counter()
    extractors = build_extractors(config.streams, config.options)
    t1 = time.perf_counter()
    source = open_source(config.videos[0], extractors.values(), config.grid, decoders=config.decoders)
    try:
        batch = next(iter(source))
        t2 = time.perf_counter()
        for ex in extractors.values():
            if "audio" not in ex.inputs or batch.audio is not None:
                ex(batch)
        sync(device)
    finally:
        source.close()
    t3 = time.perf_counter()
    print(f"start-up after import: {t3 - t0:.2f} s to the first batch's features ({len(batch)} snippets; networks "
          f"built {t1 - t0:.2f} s, first batch decoded {t2 - t1:.2f} s, networks on it {t3 - t2:.2f} s)")
    return extractors


def bench_batches(config, extractors: list) -> None:
    """Snippet batches of every video, without the networks: a thread, then 1..N decoding processes."""
    jobs = [(None, video_job(p, extractors, config.grid, frame_settings=config.frame_settings,
                             audio_settings=config.audio_settings, decoders=config.decoders)) for p in config.videos]

    def drain(decoding) -> tuple[float, float]:
        """(seconds, seconds of video) to read every batch of every video."""
        start, video_s = time.perf_counter(), 0.0
        with decoding:
            for _, source in sources_ahead(jobs, decoding):
                try:
                    video_s += source.facts().duration_s
                    for _ in source:
                        pass
                except InputError:
                    pass
                finally:
                    source.close()
        return time.perf_counter() - start, video_s

    took, video_s = drain(ThreadDecoding())
    print(f"  snippet batches, thread: {took:.2f} s = {video_s / took:.1f}x real time")
    for workers in range(1, decode_workers_for(config.decode_workers, extractors[0].options.device) + 1):
        took, video_s = drain(DecodePool(workers))
        print(f"  snippet batches, {workers} decoding process{'es' if workers > 1 else ''}: {took:.2f} s = "
              f"{video_s / took:.1f}x real time")


def bench_streams(config, extractors: dict, device: torch.device, yardstick: float, batches: int) -> None:
    source = open_source(config.videos[0], extractors.values(), config.grid, decoders=config.decoders)
    try:
        data = [batch for _, batch in zip(range(batches + 1), source)]
    finally:
        source.close()
    for name, ex in extractors.items():
        if "audio" in ex.inputs and data[0].audio is None:
            print(f"  {name}: skipped ({config.videos[0].name} has no audio)")
            continue
        ex(data[0])  # warm-up
        flops = count_flops(ex, data[0]) / len(data[0])
        timed = data[1:] or data
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        with RSSSampler() as rss:
            start = time.perf_counter()
            for batch in timed:
                ex(batch)
            sync(device)
            rate = sum(len(b) for b in timed) / (time.perf_counter() - start)
        memory = (f"peak CUDA memory {torch.cuda.max_memory_allocated(device) / MiB:.0f} MiB" if device.type == "cuda"
                  else f"peak PSS of this process {rss.peak / MiB:.0f} MiB")
        achieved = (f"{flops / 1e9:.2f} GFLOP/snippet, {flops * rate / 1e9:.1f} GFLOP/s = "
                    f"{100 * flops * rate / yardstick:.0f}% of matmul") if flops else "no torch FLOPs counted"
        print(f"  {name}: {rate:.1f} snippets/s ({rate * config.grid.stride / config.grid.fps:.1f}x real time "
              f"alone), {memory}, {achieved}")


def extract_command(videos: str, out: str, argv_options: list[str]) -> list[str]:
    return [sys.executable, "-m", "clipae", "extract", videos, out, "--quiet", *argv_options]


def exit_text(run) -> str:
    return f"timed out after {run.wall_s:.0f} s" if run.timed_out else f"exit {run.status}"


def make_long_video(path: Path, minutes: float, size: str = "320x240", fps: float = 30,
                    timeout: float = 600) -> None:
    """A generated test-pattern video of ``minutes`` with a 440 Hz tone (H.264 + AAC, ffmpeg)."""
    import imageio_ffmpeg

    seconds = minutes * 60
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=s={size}:r={fps:g}:d={seconds:g}",
                    "-f", "lavfi", "-i", f"sine=f=440:r=44100:d={seconds:g}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
                   check=True, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser, stream_dests = parser_for(argv, PROG, with_out=False)
    except ExtractionError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--bench-batches", type=int, default=3, help="batches timed per stream (default: %(default)s)")
    bench.add_argument("--variants", default="",
                       help="'|'-separated sets of extra clipae-extract options, each timed end to end in turn, "
                            "e.g. --variants='--decode-workers 0|--decode-workers 2' (default: one run with the "
                            "options given)")
    bench.add_argument("--memory-minutes", default="1,10",
                       help="lengths of the generated videos for the memory test, in minutes; empty to skip "
                            "(default: %(default)s)")
    bench.add_argument("--child-timeout", type=float, default=3600, metavar="SECONDS",
                       help="each clipae-extract child is killed after this long (default: %(default)s)")
    args = parser.parse_args(argv)
    # the options passed on to the clipae-extract child processes: everything but VIDEOS and ours
    child_options = [a for a in argv if a != args.videos]
    for flag in ("--bench-batches", "--memory-minutes", "--variants", "--child-timeout"):
        child_options = [a for a in child_options if not a.startswith(flag + "=")]
        while flag in child_options:
            i = child_options.index(flag)
            del child_options[i:i + 2]
    with tempfile.TemporaryDirectory(prefix="clipae-bench-") as tmp:
        args.out = tmp
        try:
            config = config_from_args(args, stream_dests, Ranks())
            if not config.videos:
                raise ExtractionError(f"no videos in {args.videos}")
            device = next(iter(config.options.values())).device
            print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
                  f"device {device}")
            extractors = bench_startup(config, device)
            yardstick = matmul_flops(device)
            print(f"matmul 2048x2048 float32: {yardstick / 1e9:.1f} GFLOP/s")
            print(f"decoding ({config.grid.fps:g} fps grid, short side {config.frame_settings.short_side}):")
            bench_decode(config.videos, config.grid.fps, config.decoders)
            bench_batches(config, list(extractors.values()))
            print(f"streams (batch size {batch_size_of(extractors.values())}, first video):")
            bench_streams(config, extractors, device, yardstick, args.bench_batches)
        except (ExtractionError, WeightsError) as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 2
        variants = [v.split() for v in args.variants.split("|")] if args.variants else [[]]
        for i, extra in enumerate(variants):
            run = run_measured(extract_command(args.videos, str(Path(tmp) / f"out{i}"), child_options + extra),
                               timeout=args.child_timeout)
            print(f"clipae-extract end to end{' ' + ' '.join(extra) if extra else ''}: {run.last_line}; "
                  f"{run.wall_s:.1f} s wall, peak RSS {run.peak_rss / MiB:.0f} MiB (largest process), "
                  f"PSS {run.tree_rss / MiB:.0f} MiB (all processes) ({exit_text(run)})")
        minutes = [float(m) for m in args.memory_minutes.split(",") if m.strip()]
        peaks = []
        for m in minutes:
            video = Path(tmp) / f"generated_{m:g}min.mp4"
            make_long_video(video, m)
            run = run_measured(extract_command(str(video), str(Path(tmp) / f"out{m:g}"), child_options),
                               timeout=args.child_timeout)
            peaks.append(run.peak_rss)
            print(f"memory, {m:g}-minute generated video (320x240, 30 fps, audio): peak RSS "
                  f"{run.peak_rss / MiB:.0f} MiB; {run.last_line} ({exit_text(run)})")
            video.unlink()
        if len(peaks) >= 2:
            print(f"memory ratio {minutes[-1]:g} min / {minutes[0]:g} min: {peaks[-1] / peaks[0]:.2f} (goal <= 1.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
