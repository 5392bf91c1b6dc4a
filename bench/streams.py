"""``clipae-bench streams``: the networks of the feature streams alone, on ready-made snippets.

For each stream, in a fresh process (so peak memory is its own): build it, run one snippet to
warm up, then time ``--batches`` batches of ``--batch-size`` snippets (by default the batch
``clipae-extract`` takes for that stream alone on the device) and print

* snippets/s and × real time (video seconds per snippet = stride / fps, 0.64 s by default);
* peak memory: CUDA ``max_memory_allocated``, or the process's own peak resident set (``VmHWM``)
  on the CPU;
* GFLOP per snippet counted by ``torch.utils.flop_counter`` (convolutions and matrix products;
  pooling, ``grid_sample`` and element-wise work are not counted) and the achieved FLOP/s as a
  fraction of this machine's measured matrix-product FLOP/s in the precision the visual streams run
  in (``--precision``: by default float32 on the CPU, bfloat16 on CUDA).

Frames are random 455×256 (THUMOS-like 320×180 video with the short side resized to 256; another
size with ``--frame-size WxH``) unless ``--video`` names a file; audio windows (VGGish) are random
noise; weights are random unless ``--weights-dir`` holds the real ones (the speed does not depend
on the weights). Decoding is not timed here. ``--crop N`` shrinks the I3D input (224 by default)
for quick smoke runs only (``clipae-bench gpu --dry-run``); such rows are not the features' cost.
``--profile N`` also runs one more batch under ``torch.profiler`` and prints the N operators that
took the most of its time (self time, CPU and CUDA): where a stream's time goes.
``--json PATH`` also writes the rows as JSON. Each stream's process is stopped after
``--timeout`` seconds; ``--in-process`` runs them all in the benchmark's own process instead.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue as queues
import sys
import time

import numpy as np
import torch

from ..extractors.base import PRECISIONS, ExtractorOptions, SnippetBatch, autocast_dtype, available_streams, get_stream
from ..pipeline.extract import default_batch_size
from .measure import count_flops, own_peak_rss


def matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """This machine's FLOP/s on an ``n``×``n`` matrix product (best of ``repeats``, after one warm-up):
    the yardstick the benchmarks compare the streams' achieved FLOP/s with."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA) before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batch(frames: np.ndarray, batch_size: int, length: int, audio_window: int = 0) -> SnippetBatch:
    """``batch_size`` consecutive snippets of ``length`` frames cycling through ``frames``
    ``(N, H, W, 3)`` uint8; with ``audio_window`` also ``(batch_size, audio_window)`` float32 noise."""
    idx = np.arange(batch_size * length + 1) % len(frames)
    clip = frames[idx]
    audio = (np.random.default_rng(0).uniform(-0.5, 0.5, (batch_size, audio_window)).astype(np.float32)
             if audio_window else None)
    return SnippetBatch(index=np.arange(batch_size), frames=clip[:-1].reshape(batch_size, length, *frames.shape[1:]),
                        next_frames=clip[length::length], has_next=np.ones(batch_size, dtype=bool), audio=audio)


def load_frames(video: str | None, count: int, short_side: int = 256, size: tuple[int, int] = (455, 256)) -> np.ndarray:
    """``(count, H, W, 3)`` uint8: random frames of ``size`` (W, H), or the first frames of ``video``
    with the short side resized to ``short_side``."""
    if video is None:
        return np.random.default_rng(0).integers(0, 256, (count, size[1], size[0], 3), dtype=np.uint8)
    import av
    frames = []
    with av.open(video) as container:
        stream = container.streams.video[0]
        scale = short_side / min(stream.width, stream.height)
        size = dict(width=round(stream.width * scale), height=round(stream.height * scale))
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24", **size))
            if len(frames) == count:
                break
    return np.stack(frames)


def profile_batch(stream, batch: SnippetBatch, top: int) -> list[dict]:
    """The ``top`` operators by self time of one call of ``stream`` on ``batch``, under
    ``torch.profiler``: ``[{"op", "ms", "share", "calls"}]``, ``share`` of the call's summed self time."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")      # the profiler's own start-up chatter off
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities, acc_events=True) as prof:
        stream(batch)
        sync(torch.device(stream.options.device))
    events = prof.key_averages()
    def self_us(e):
        return e.self_cpu_time_total + getattr(e, "self_device_time_total", 0)
    total = sum(self_us(e) for e in events) or 1.0
    ranked = sorted(events, key=self_us, reverse=True)[:top]
    return [{"op": e.key, "ms": self_us(e) / 1e3, "share": self_us(e) / total, "calls": e.count} for e in ranked]


def benchmark_stream(name: str, options: ExtractorOptions, frames: np.ndarray, length: int, batches: int,
                     crop: int | None = None, profile_top: int = 0) -> dict:
    """Time one stream in this process: snippets/s, peak memory (bytes), FLOP per snippet, and with
    ``profile_top`` the operators that took most of one more batch's time.
    ``crop``: the I3D input size instead of 224 (smoke runs)."""
    device = torch.device(options.device)
    stream = get_stream(name)(options)
    if crop is not None and hasattr(stream, "crop"):
        stream.crop = crop
    window = stream.audio_window if "audio" in stream.inputs else 0
    batch = make_batch(frames, options.batch_size, length, window)
    one = make_batch(frames, 1, length, window)
    stream(batch if options.compile else one)  # warm-up (lazy initialisation, allocations; --compile compiles here)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t = time.perf_counter()
    for _ in range(batches):
        stream(batch)
    sync(device)
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else own_peak_rss()
    flops = count_flops(stream, one)
    return {"stream": name, "snippets_per_s": batches * len(batch) / seconds, "peak_bytes": peak,
            "flop_per_snippet": flops, "weights": stream.weights_id,
            "settings": stream.settings(), "profile": profile_batch(stream, batch, profile_top) if profile_top else []}


def _child(queue, *args) -> None:
    try:
        queue.put(("ok", benchmark_stream(*args)))
    except Exception as e:  # handed to the parent, which prints it and fails
        queue.put(("error", f"{type(e).__name__}: {e}"))


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, list[str]]]:
    parser = argparse.ArgumentParser(prog="clipae-bench streams", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="i3d_rgb,i3d_flow,clip")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="snippets per call (default: clipae-extract's for the stream alone on this device)")
    parser.add_argument("--batches", type=int, default=2, help="timed calls per stream (default %(default)s)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                        help="the visual networks' precision, as clipae-extract's (default %(default)s)")
    parser.add_argument("--compile", action="store_true",
                        help="CLIP's image tower through torch.compile, as clipae-extract's (compiled before the "
                             "timed calls)")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--snippet-length", type=int, default=16)
    parser.add_argument("--snippet-stride", type=int, default=16)
    parser.add_argument("--video", help="take the frames from this video instead of random ones")
    parser.add_argument("--weights-dir", help="use the real checkpoints found here (default: random weights)")
    parser.add_argument("--frame-size", default="455x256", metavar="WxH",
                        help="size of the random frames (default %(default)s: 320x180 video, short side 256)")
    parser.add_argument("--crop", type=int, default=None, metavar="N",
                        help="I3D input size instead of 224, for quick smoke runs only")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print the N operators that took most of one more batch's time")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to this JSON file")
    parser.add_argument("--in-process", action="store_true",
                        help="run every stream in this process (quicker start; peak memory is then this process's "
                             "peak so far, not the stream's own)")
    parser.add_argument("--timeout", type=float, default=1800, metavar="SECONDS",
                        help="stop a stream's process after this long (default %(default)s)")
    dests: dict[str, list[str]] = {}
    for name in available_streams():
        before = {a.dest for a in parser._actions}
        get_stream(name).add_arguments(parser.add_argument_group(f"{name} stream"))
        dests[name] = [a.dest for a in parser._actions if a.dest not in before]
    return parser, dests


def frame_size(text: str) -> tuple[int, int]:
    """``"WxH"`` → ``(W, H)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--frame-size must be WxH, e.g. 455x256, not {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"--frame-size must be positive, not {text!r}")
    return w, h


def run_in_child(ctx, args: tuple, timeout: float) -> tuple[str, object]:
    """:func:`benchmark_stream` in a fresh process, stopped after ``timeout`` seconds:
    ``("ok", row)`` or ``("error", message)``."""
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, *args))
    proc.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                return queue.get(timeout=0.5)
            except queues.Empty:
                if not proc.is_alive():  # died without a word (a crash, killed for memory)
                    try:
                        return queue.get(timeout=1)
                    except queues.Empty:
                        return "error", f"its process ended without a result (exit code {proc.exitcode})"
        return "error", f"no result after {timeout:g} s; stopped"
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser, dests = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        size = frame_size(args.frame_size)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    device = torch.device(args.device)
    names = [s.strip() for s in args.streams.split(",") if s.strip()]
    unknown = [n for n in names if n not in dests]
    if unknown:
        print(f"clipae-bench streams: error: unknown stream {unknown[0]!r}; known: {', '.join(dests)}", file=sys.stderr)
        return 2
    batch = {n: args.batch_size or default_batch_size([n], device) for n in names}
    frames = load_frames(args.video, max(batch.values()) * args.snippet_length + 1, size=size)
    video_s_per_snippet = args.snippet_stride / args.fps
    dtype = autocast_dtype(device, args.precision) or torch.float32   # the yardstick in the streams' precision
    peak_flops = matmul_flops(device, dtype)
    print(f"device {device} ({torch.get_num_threads()} CPU threads), frames {frames.shape[2]}x{frames.shape[1]}, "
          f"{'/'.join(map(str, sorted(set(batch.values()))))} snippets of {args.snippet_length} frames per call, "
          f"{'real' if args.weights_dir else 'random'} weights; "
          f"measured {str(dtype).removeprefix('torch.')} matmul: {peak_flops / 1e9:.1f} GFLOP/s"
          + (f"; I3D input {args.crop}x{args.crop} (smoke run)" if args.crop else ""))
    print(f"{'stream':10} {'batch':>5} {'snippets/s':>10} {'x real time':>11} {'peak MiB':>9} {'GFLOP/snip':>10} "
          f"{'GFLOP/s':>8} {'of matmul':>9}  settings")
    ctx = mp.get_context("spawn")
    rows = []
    for name in names:
        options = ExtractorOptions(device=device, batch_size=batch[name], random_weights=not args.weights_dir,
                                   weights_dir=args.weights_dir, precision=args.precision, compile=args.compile,
                                   extra={d: getattr(args, d) for d in dests[name]})
        job = (name, options, frames, args.snippet_length, args.batches, args.crop, args.profile)
        if args.in_process:
            try:
                status, r = "ok", benchmark_stream(*job)
            except Exception as e:  # printed on one line below, like a child's failure
                status, r = "error", f"{type(e).__name__}: {e}"
        else:
            status, r = run_in_child(ctx, job, args.timeout)
        if status == "error":
            print(f"clipae-bench streams: {name}: {r}", file=sys.stderr)
            return 1
        achieved = r["flop_per_snippet"] * r["snippets_per_s"]
        r.update(x_real_time=r["snippets_per_s"] * video_s_per_snippet, flop_per_s=achieved,
                 matmul_flop_per_s=peak_flops, matmul_fraction=achieved / peak_flops, device=str(device),
                 batch_size=batch[name])
        rows.append(r)
        shown = {k: v for k, v in r["settings"].items() if k in ("flow", "raft_iters", "model", "frames", "preprocess", "precision", "compiled")}
        print(f"{name:10} {batch[name]:5d} {r['snippets_per_s']:10.3f} {r['x_real_time']:11.3f} "
              f"{r['peak_bytes'] / 2**20:9.0f} {r['flop_per_snippet'] / 1e9:10.1f} {achieved / 1e9:8.1f} "
              f"{r['matmul_fraction']:9.1%}  {shown}")
        for p in r["profile"]:
            print(f"{'':10}   {p['share']:6.1%} {p['ms']:9.1f} ms  {p['calls']:5d} calls  {p['op']}")
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(rows, f, indent=1, default=str)
        except OSError as e:
            print(f"clipae-bench streams: error: cannot write {args.json}: {e.strerror or e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
