"""``clipae-extract VIDEOS OUT``: snippet features of every video, crash-safe and resumable.

VIDEOS is a folder (searched recursively), one video file, or a text file listing paths.
Streams declare their own options (``Extractor.add_arguments``); they are listed under one
heading per stream in ``--help`` and reach the stream as ``options.extra``.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
from pathlib import Path

import torch

from ..core.dist import Ranks
from ..core.grid import SnippetGrid
from ..core.interrupt import EXIT_STATUS, StopSignals, exit_on_sigterm
from ..core.weights import DEFAULT_WEIGHTS_DIR
from ..decoding.decode import BACKENDS, DEFAULT_DECODERS, FrameSettings, backends_named
from ..decoding.snippets import DEFAULT_STALL_TIMEOUT_S
from ..extractors.base import CROPS, PRECISIONS, ExtractorOptions, available_streams, get_stream
from .extract import (DEFAULT_STREAMS, ExtractionError, RunConfig, default_batch_size, find_videos,
                      limit_malloc_arenas, run)
from .presets import PRESETS, describe, get_preset, manifest_entry

PROG = "clipae-extract"


def _plugin_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--stream-module", action="append", default=[], metavar="MODULE",
                   help="import MODULE first: a module outside clipae that registers more streams "
                        "with @register_stream (repeatable)")
    p.add_argument("--preset", metavar="NAME",
                   help="extract like a public feature set: sets the defaults of the grid, resize, crops, flow "
                        f"and streams (explicit options win); 'list' prints them with sources ({', '.join(PRESETS)})")
    return p


def build_parser(prog: str = PROG, with_out: bool = True) -> tuple[argparse.ArgumentParser, dict[str, list[str]]]:
    """The parser, and for each stream the ``dest`` names of its own options.

    ``with_out=False`` leaves out the OUT argument (``clipae-bench extract`` reuses the rest).
    """
    parser = argparse.ArgumentParser(
        prog=prog, parents=[_plugin_parser()],
        description="Extract snippet features (DESIGN.md streams) of videos into OUT/features/<stream>/"
                    "<video_id>.npy and OUT/manifest.jsonl. Rerunning resumes; see the README.")
    parser.add_argument("videos", metavar="VIDEOS", help="a folder of videos, one video, or a .txt file listing paths")
    if with_out:
        parser.add_argument("out", metavar="OUT", help="output folder (manifest.jsonl, features/)")
    parser.add_argument("--streams", default=",".join(DEFAULT_STREAMS),
                        help=f"comma-separated streams (default: %(default)s; available: {', '.join(available_streams())})")
    parser.add_argument("--fps", type=float, default=SnippetGrid.fps, help="frames per second of the grid (default: %(default)s)")
    parser.add_argument("--snippet-length", type=int, default=SnippetGrid.length, help="frames per snippet (default: %(default)s)")
    parser.add_argument("--snippet-stride", type=int, default=SnippetGrid.stride, help="frames between snippet starts (default: %(default)s)")
    parser.add_argument("--short-side", type=int, default=FrameSettings.short_side, metavar="PIXELS",
                        help="frames are resized so their short side is this (default: %(default)s)")
    parser.add_argument("--crops", choices=CROPS, default="center",
                        help="spatial views of the visual streams: center, 3 (start, centre, end of the long side) "
                             "or 10 (four corners and centre, and the same of the flipped frame, as torchvision's "
                             "TenCrop) (default: %(default)s)")
    parser.add_argument("--keep-crops", action="store_true",
                        help="store every crop, (T, crops, dim), instead of their mean (T, dim)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device; under torchrun 'cuda' means cuda:LOCAL_RANK (default here: %(default)s)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                        help="the visual networks' precision: auto is bfloat16 autocast on CUDA and float32 on the CPU; "
                             "bfloat16 also on the CPU (fast where it has AMX; rows differ by bfloat16 rounding); RAFT "
                             "always runs in float32 (default: %(default)s)")
    parser.add_argument("--compile", action="store_true",
                        help="run CLIP's image tower through torch.compile: ~1 min to compile at the start (and once "
                             "more when the batch size changes), then 1.18x faster on a CPU; rows differ by rounding, "
                             "recorded in the stream settings (default: off)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="snippets per network call, one batch for all streams (default: 16 on a GPU; on the CPU, "
                             "where larger batches were no faster for the video networks and need more memory, the smallest of the "
                             "streams': " + ", ".join(f"{n} {get_stream(n).cpu_batch_size}" for n in available_streams())
                             + ")")
    parser.add_argument("--decoders", default=",".join(DEFAULT_DECODERS),
                        help="video decoders tried in order, each taking over where the previous one cannot open "
                             f"or read a file (default: %(default)s; known: {', '.join(BACKENDS)})")
    parser.add_argument("--decode-workers", default="auto", metavar="N",
                        help="decode N videos at once in worker processes beside the networks; 0 decodes in a "
                             "thread of this process; auto: 0 on the CPU, else half the cores (at most 8, "
                             "shared by the ranks of a node) (default: %(default)s)")
    parser.add_argument("--stall-timeout", type=float, default=DEFAULT_STALL_TIMEOUT_S, metavar="SECONDS",
                        help="a decoder, ffmpeg pipe or decoding process that hands over nothing for this long "
                             "fails its video ('stalled: no frames for N s') and the run goes on "
                             "(default: %(default)g)")
    parser.add_argument("--per-video-batches", action="store_true",
                        help="never let two videos share a network batch (slower on short videos; a video's rows "
                             "then do not depend on the videos next to it)")
    parser.add_argument("--weights-dir", default=str(DEFAULT_WEIGHTS_DIR),
                        help="where known checkpoints are downloaded and looked up (default: %(default)s)")
    parser.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                        help="use this local checkpoint for NAME (a stream, or a file a stream declares, e.g. "
                             "raft_large for i3d_flow); loaded strictly, its sha256 recorded (repeatable)")
    parser.add_argument("--random-weights", action="store_true",
                        help="random initialisation instead of checkpoints (features are meaningless; for testing)")
    parser.add_argument("--overwrite", action="store_true", help="extract every video again, even if already done")
    parser.add_argument("--hash-sources", action="store_true",
                        help="bind each manifest line to its video's sha256 as well as its path, size and mtime "
                             "(reads every video in full on every run, done or not)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    stream_dests: dict[str, list[str]] = {}
    declared: dict[object, list[str]] = {}  # add_arguments function -> dests it added
    for name in available_streams():
        cls = get_stream(name)
        hook = cls.add_arguments.__func__
        if hook not in declared:
            group = parser.add_argument_group(f"{name} stream")
            before = {a.dest for a in parser._actions}
            cls.add_arguments(group)
            declared[hook] = [a.dest for a in parser._actions if a.dest not in before]
        stream_dests[name] = declared[hook]
    return parser, stream_dests


def parse_weights(pairs: list[str], known: set[str]) -> dict[str, str]:
    weights = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ExtractionError(f"--weights {pair!r}: expected NAME=PATH")
        if name not in known:
            raise ExtractionError(f"--weights {name}=...: unknown name; known: {', '.join(sorted(known))}")
        weights[name] = path
    return weights


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1


def config_from_args(args: argparse.Namespace, stream_dests: dict[str, list[str]], ranks: Ranks) -> RunConfig:
    streams = [s.strip() for s in args.streams.split(",") if s.strip()]
    if not streams:
        raise ExtractionError("--streams is empty")
    unknown = [s for s in streams if s not in stream_dests]
    if unknown:
        raise ExtractionError(f"unknown stream {unknown[0]!r}; available: {', '.join(sorted(stream_dests)) or 'none'}")
    if len(set(streams)) != len(streams):
        raise ExtractionError(f"--streams names a stream twice: {args.streams}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ExtractionError("--batch-size must be at least 1")
    if not args.stall_timeout > 0:
        raise ExtractionError(f"--stall-timeout {args.stall_timeout:g}: expected a number of seconds above 0")
    decode_workers = None if args.decode_workers == "auto" else _count(args.decode_workers)
    if decode_workers is not None and decode_workers < 0:
        raise ExtractionError(f"--decode-workers {args.decode_workers}: expected a number of processes (0 or more) or auto")
    try:
        grid = SnippetGrid(args.fps, args.snippet_length, args.snippet_stride)
    except ValueError as e:
        raise ExtractionError(str(e)) from None
    if args.short_side < 1:
        raise ExtractionError(f"--short-side must be positive, not {args.short_side}")
    decoders = tuple(d.strip() for d in args.decoders.split(",") if d.strip())
    try:
        backends_named(decoders or ("",))
    except KeyError as e:
        raise ExtractionError(f"--decoders: {e.args[0]}") from None
    known = {n for s in stream_dests for n in (s, *get_stream(s).extra_weights)}
    weights = parse_weights(args.weights, known)
    device = args.device
    if device == "cuda" and ranks.distributed:
        device = f"cuda:{ranks.local_rank}"
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise ExtractionError(f"--device {args.device}: {e}") from None
    batch_size = args.batch_size or default_batch_size(streams, device)
    options = {name: ExtractorOptions(device=device, batch_size=batch_size, weights_paths=dict(weights), random_weights=args.random_weights,
                                      weights_dir=args.weights_dir, crops=args.crops, keep_crops=args.keep_crops,
                                      precision=args.precision, compile=args.compile,
                                      extra={d: getattr(args, d) for d in stream_dests[name]})
               for name in streams}
    preset = manifest_entry(get_preset(args.preset), vars(args)) if args.preset else None
    return RunConfig(videos=find_videos(args.videos), out=Path(args.out), streams=streams, grid=grid,
                     options=options, overwrite=args.overwrite,
                     progress=not args.quiet and sys.stderr.isatty(),
                     frame_settings=FrameSettings(short_side=args.short_side), preset=preset,
                     decoders=decoders, decode_workers=decode_workers,
                     cross_video_batches=not args.per_video_batches, hash_sources=args.hash_sources,
                     stall_timeout_s=args.stall_timeout)


def parser_for(argv: list[str], prog: str = PROG, with_out: bool = True
               ) -> tuple[argparse.ArgumentParser, dict[str, list[str]]]:
    """:func:`build_parser` after importing the ``--stream-module`` modules named in ``argv``
    (their streams' options must be known before parsing), with the defaults of ``--preset``."""
    plugins, _ = _plugin_parser().parse_known_args(argv)
    for module in plugins.stream_module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ExtractionError(f"--stream-module {module}: {e}") from None
    parser, stream_dests = build_parser(prog, with_out)
    if plugins.preset and plugins.preset != "list":
        try:
            preset = get_preset(plugins.preset)
        except KeyError as e:
            raise ExtractionError(f"--preset: {e.args[0]}") from None
        parser.set_defaults(**preset.options)  # an option given explicitly still wins
    return parser, stream_dests


def print_presets() -> None:
    for preset in PRESETS.values():
        print("\n".join(describe(preset)))
        print()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _plugin_parser().parse_known_args(argv)[0].preset == "list":
        print_presets()
        return 0
    limit_malloc_arenas()   # before any decoding or network thread exists
    parser, stream_dests = parser_for(argv)
    args = parser.parse_args(argv)
    ranks = Ranks.from_env()
    exit_on_sigterm()
    try:
        config = config_from_args(args, stream_dests, ranks)
        if args.random_weights and ranks.rank == 0:
            print(f"{PROG}: WARNING: --random-weights: RANDOM weights for {', '.join(config.streams)}; these "
                  "features mean nothing (the manifest records \"random\")", file=sys.stderr)
        ranks.start()
        with StopSignals(PROG) as stop:
            summary = run(config, ranks, stop)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        ranks.stop()
    if ranks.rank == 0 or summary.stopped_by:
        for line in summary.lines():
            print(line, flush=True)
        if summary.stopped:
            print(f"{PROG}: error: {summary.stopped}; stopped (what is written is complete: fix it and run the "
                  "same command again to resume)", file=sys.stderr)
    if summary.stopped_by:
        return EXIT_STATUS[signal.Signals[summary.stopped_by]]
    if summary.stopped:
        return 2
    return 1 if summary.failed else 0
