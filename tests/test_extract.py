"""The extraction runner and clipae-extract, with the tiny deterministic streams of toy_streams.py."""
import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

import toy_streams  # noqa: F401  (registers toy_colour and toy_rms)
import videogen
from clipae.cli import extract_main as main
from clipae.extractors.base import Extractor, ExtractorOptions, register_stream
from clipae.pipeline import manifest as mf
from clipae.decoding.decode import VideoDecoder
from clipae.pipeline import extract
from clipae.pipeline.extract import RunConfig, extract_video
from clipae.core.grid import SnippetGrid
from clipae.decoding.workers import DecodePool
from clipae.decoding.snippets import Recycler, SnippetSource, VideoJob

DATA = Path(__file__).parent / "data" / "videos"
TOYS = ["--stream-module", "toy_streams", "--streams", "toy_colour,toy_rms", "--quiet"]
DESIGN_FIELDS = {"video_id", "source", "status", "duration_s", "native_fps", "num_frames", "fps", "snippet_length",
                 "snippet_stride", "num_snippets", "has_audio", "streams", "config_hash", "weights", "source_file"}


@register_stream("toy_broken")
class Broken(Extractor):
    """Fails on videos longer than two snippets, like a bug that only some inputs reach."""
    dim = 2
    inputs = ("frames",)

    def __call__(self, batch):
        if batch.index.max() >= 2:
            raise RuntimeError("snippet 2 is out of reach\nsecond line")
        return np.zeros((len(batch), 2), np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    videogen.make_video(d / "plain.mp4", duration=3.0)
    videogen.make_video(d / "with space é.mp4", duration=2.0, audio="5.1")
    (d / "sub").mkdir()
    videogen.make_video(d / "sub" / "rotated.mp4", duration=1.5, rotate=90, audio=None)
    videogen.make_colour_video(d / "vfr.mp4", [("red", 1.0, 10), ("blue", 1.0, 30)])
    videogen.make_video(d / "short.mp4", duration=0.3)
    videogen.make_audio_only(d / "audio_only.mp4")
    videogen.make_truncated(d / "truncated.mp4")
    (d / "zero.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("not a video\n")
    (d / "notes.md").write_text("not listed: unknown suffix\n")
    return d


GOOD = {"plain": 5, "with space é": 4, "rotated": 3, "vfr": 4, "short": 1}  # video -> snippets
BAD = {"audio_only": "no video stream", "truncated": "truncated or corrupt", "zero": "cannot open",
       "text": "cannot open"}


def run_cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def lines(out: Path) -> list[dict]:
    return list(mf.iter_lines(out / "manifest.jsonl"))


def check_files(out: Path, record: dict) -> None:
    for name, entry in record["streams"].items():
        array = np.load(out / entry["path"])
        assert array.shape == (record["num_snippets"], entry["dim"]) and array.dtype == np.float32, name


@pytest.fixture(scope="module")
def first_run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    rc = main([str(folder), str(out), *TOYS])
    return rc, out


def test_every_input_is_extracted_or_fails_on_one_line(folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, stderr = run_cli(capsys, folder, out, *TOYS)
    assert rc == 1
    assert "Traceback" not in stdout + stderr
    assert "5 ok, 4 failed, 0 already done; 17 snippets, 8.9 s of video" in stdout
    records = mf.read_manifest(out / "manifest.jsonl")
    assert set(records) == set(GOOD) | set(BAD)
    for vid, snippets in GOOD.items():
        rec = records[vid]
        assert set(rec) == DESIGN_FIELDS and rec["status"] == "ok"
        assert rec["num_snippets"] == snippets == SnippetGrid().num_snippets(SnippetGrid().num_frames(rec["duration_s"]))
        check_files(out, rec)
        assert set(rec["streams"]) == {"toy_colour", "toy_rms"}
        assert set(rec["streams"]["toy_rms"]) == {"path", "sha256", "dim", "dtype", "settings", "options"}
        # each stream's own command-line options, so that one more video can be extracted the same way
        assert rec["streams"]["toy_colour"]["options"] == {"toy_scale": 1.0, "toy_delay": 0.0}
        assert rec["streams"]["toy_rms"]["options"] == {}
    for vid, reason in BAD.items():
        rec = records[vid]
        assert rec["status"] == "failed" and reason in rec["error"] and "\n" not in rec["error"]
        assert f"failed {vid}: {reason}" in stdout
    assert records["with space é"]["has_audio"] and not records["rotated"]["has_audio"]
    assert not np.load(out / records["rotated"]["streams"]["toy_rms"]["path"]).any()  # no audio: zero rows
    assert np.load(out / records["with space é"]["streams"]["toy_rms"]["path"]).min() > 0.02
    assert records["rotated"]["source"] == str(folder / "sub" / "rotated.mp4")


def test_in_memory_api_on_a_vfr_video(folder):
    record, features = extract_video(folder / "vfr.mp4", ["toy_colour", "toy_rms"], SnippetGrid(), ExtractorOptions())
    assert record["num_snippets"] == 4 and record["has_audio"] is False and "path" not in record["streams"]["toy_rms"]
    colour = features["toy_colour"]
    # red for 1.0 s (snippet 0, 9 of 16 frames of snippet 1), then blue
    np.testing.assert_allclose(colour[:, 0], [1, 9 / 16, 0, 0], atol=0.01)
    np.testing.assert_allclose(colour[:, 2], [0, 7 / 16, 1, 1], atol=0.01)
    assert not features["toy_rms"].any()


@pytest.mark.parametrize("decoding", ["thread", "process"])
def test_snippet_batches_cut_the_grid_frames(folder, decoding):
    """Overlapping snippets (length 16, stride 8): frames, next frame and padding past the end,
    decoded in a thread or in a worker process."""
    grid = SnippetGrid(25.0, 16, 8)
    dec = VideoDecoder(str(folder / "plain.mp4"), grid.fps)
    dec.open()
    every = np.concatenate(list(dec.chunks()))                   # 75 grid frames
    job = VideoJob(str(folder / "plain.mp4"), grid, frames=True, audio_window=100, batch_size=3)
    with contextlib.ExitStack() as stack:
        if decoding == "thread":
            source = SnippetSource(job)
        else:
            source = stack.enter_context(DecodePool(1)).open(job)
        batches = list(source)
        source.close()
    index = np.concatenate([b.index for b in batches])
    assert index.tolist() == list(range(grid.num_snippets(75))) == list(range(9))
    frames = np.concatenate([b.frames for b in batches])
    nxt = np.concatenate([b.next_frames for b in batches])
    has_next = np.concatenate([b.has_next for b in batches])
    for i in index:
        want = np.minimum(np.arange(i * 8, i * 8 + 17), 74)       # clipped: the final frame repeats
        assert np.array_equal(frames[i], every[want[:16]]) and np.array_equal(nxt[i], every[want[16]])
        assert has_next[i] == (i * 8 + 16 < 75)
    assert all(b.audio.shape == (len(b), 100) for b in batches)


def test_sample_videos(tmp_path, capsys):
    rc, stdout, _ = run_cli(capsys, DATA, tmp_path, *TOYS)
    assert rc == 0
    records = mf.read_manifest(tmp_path / "manifest.jsonl")
    # 355 frames at 19.62 fps = 18.09 s -> 453 grid frames; 420 at 30 fps = 14 s -> 350
    assert records["v_GGSY1Qvo990"]["num_snippets"] == 29 and records["v_ZNVhz7ctTq0"]["num_snippets"] == 22
    assert records["v_GGSY1Qvo990"]["num_frames"] == 355 and records["v_GGSY1Qvo990"]["native_fps"] == pytest.approx(19.62)
    for rec in records.values():
        assert rec["has_audio"]
        check_files(tmp_path, rec)
        assert np.load(tmp_path / rec["streams"]["toy_rms"]["path"]).mean() > 0.01


def test_rerun_skips_overwrite_redoes_and_changed_settings_redo_one_stream(folder, first_run, capsys):
    _, out = first_run
    before = {p: p.stat().st_mtime_ns for p in (out / "features").rglob("*.npy")}
    n_lines = len(lines(out))
    rc, stdout, _ = run_cli(capsys, folder, out, *TOYS)
    assert rc == 1 and "0 ok, 4 failed, 5 already done" in stdout   # bad videos are retried
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert len(lines(out)) == n_lines + 4

    old = mf.read_manifest(out / "manifest.jsonl")["plain"]
    rc, stdout, _ = run_cli(capsys, folder / "plain.mp4", out, *TOYS, "--toy-scale", "2")
    assert rc == 0 and "1 ok, 0 failed, 0 already done" in stdout
    new = mf.read_manifest(out / "manifest.jsonl")["plain"]
    assert new["config_hash"] != old["config_hash"]
    assert new["streams"]["toy_colour"]["settings"]["scale"] == 2.0
    assert new["streams"]["toy_rms"] == old["streams"]["toy_rms"]
    rms_file = out / new["streams"]["toy_rms"]["path"]
    assert rms_file.stat().st_mtime_ns == before[rms_file]          # unchanged stream kept, not redone
    colour_file = out / new["streams"]["toy_colour"]["path"]
    assert colour_file.stat().st_mtime_ns != before[colour_file]

    rc, stdout, _ = run_cli(capsys, folder / "plain.mp4", out, *TOYS, "--toy-scale", "2", "--overwrite")
    assert rc == 0 and "1 ok" in stdout
    assert rms_file.stat().st_mtime_ns != before[rms_file]


def test_adding_a_stream_to_existing_lines(folder, tmp_path, capsys):
    run_cli(capsys, folder / "plain.mp4", tmp_path, "--stream-module", "toy_streams", "--streams", "toy_colour")
    colour_file = tmp_path / "features" / "toy_colour" / "plain.npy"
    stamp = colour_file.stat().st_mtime_ns
    rc, stdout, _ = run_cli(capsys, folder / "plain.mp4", tmp_path, "--stream-module", "toy_streams", "--streams", "toy_rms")
    assert rc == 0
    merged = mf.read_manifest(tmp_path / "manifest.jsonl")["plain"]
    assert set(merged["streams"]) == {"toy_colour", "toy_rms"} and colour_file.stat().st_mtime_ns == stamp
    # the merged line is the one a single run with both streams writes
    both = tmp_path / "both"
    run_cli(capsys, folder / "plain.mp4", both, *TOYS)
    fresh = mf.read_manifest(both / "manifest.jsonl")["plain"]
    assert merged["config_hash"] == fresh["config_hash"] and merged["streams"] == fresh["streams"]
    # asking for both now does nothing
    rc, stdout, _ = run_cli(capsys, folder / "plain.mp4", tmp_path, *TOYS)
    assert "0 ok, 0 failed, 1 already done" in stdout


def test_adding_streams_to_imported_features(folder, tmp_path, capsys):
    """A line imported from public features keeps its streams; new ones follow its snippet count."""
    rows = 7  # this extraction would make 5 rows: the imported count wins
    imported = np.arange(rows * 8, dtype=np.float32).reshape(rows, 8)
    mf.save_array_atomic(tmp_path / "features" / "i3d_rgb" / "plain.npy", imported)
    entry = {"path": "features/i3d_rgb/plain.npy", "dim": 8, "dtype": "float32",
             "settings": {"source": "imported W-TALC features"}}
    mf.append_record(tmp_path / "manifest.jsonl", {
        "video_id": "plain", "source": "plain.mp4", "status": "ok", "duration_s": 3.0, "native_fps": 25.0,
        "num_frames": 75, "fps": 25.0, "snippet_length": 16, "snippet_stride": 16, "num_snippets": rows,
        "has_audio": True, "streams": {"i3d_rgb": entry}, "config_hash": "imported", "weights": {"i3d_rgb": "sha256:ab"}})
    rc, _, _ = run_cli(capsys, folder / "plain.mp4", tmp_path, "--stream-module", "toy_streams", "--streams", "toy_rms,toy_colour")
    assert rc == 0
    rec = mf.read_manifest(tmp_path / "manifest.jsonl")["plain"]
    assert rec["streams"]["i3d_rgb"] == entry and rec["weights"]["i3d_rgb"] == "sha256:ab"
    assert rec["num_snippets"] == rows and rec["config_hash"] != "imported"
    check_files(tmp_path, rec)
    np.testing.assert_array_equal(np.load(tmp_path / entry["path"]), imported)
    colour = np.load(tmp_path / rec["streams"]["toy_colour"]["path"])
    np.testing.assert_array_equal(colour[5], colour[6])   # past the video's end: the final frame repeats


@pytest.mark.parametrize("batch_size", ["4", "16"])
def test_a_failing_stream_is_recorded_and_the_run_goes_on(folder, tmp_path, capsys, batch_size):
    # with 4, rows of plain, which has failed on its first batch, share a later batch with the next
    # video's: they are left out of it, so that video does not fail with them
    rc, stdout, stderr = run_cli(capsys, folder, tmp_path, "--streams", "toy_broken", "--quiet", "--batch-size", batch_size)
    assert rc == 1 and "Traceback" not in stdout + stderr
    records = mf.read_manifest(tmp_path / "manifest.jsonl")
    assert records["plain"]["status"] == "failed"
    assert records["plain"]["error"] == ("internal error RuntimeError: snippet 2 is out of reach "
                                         "(traceback in errors.log)")
    assert records["short"]["status"] == "ok"
    assert "Traceback" in (tmp_path / "errors.log").read_text()


@pytest.mark.parametrize("args,message", [
    (["--streams", "toy_colour,nope"], "unknown stream 'nope'"),
    (["--streams", "toy_colour", "--weights", "nope=x.pth"], "--weights nope=...: unknown name"),
    (["--streams", "toy_colour", "--weights", "toy_colour"], "expected NAME=PATH"),
    (["--streams", "toy_colour", "--snippet-stride", "0"], "invalid snippet grid"),
    (["--streams", "toy_colour", "--decoders", "pyav,nope"], "--decoders: unknown decoder 'nope'"),
])
def test_bad_arguments_one_line_exit_2(folder, tmp_path, capsys, args, message):
    rc, stdout, stderr = run_cli(capsys, folder, tmp_path, "--stream-module", "toy_streams", *args)
    assert rc == 2 and message in stderr and len(stderr.strip().splitlines()) == 1


def test_video_lists_and_duplicate_ids(folder, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two videos\n{folder / 'plain.mp4'}\n\nshort.mp4\n")
    (tmp_path / "short.mp4").write_bytes((folder / "short.mp4").read_bytes())
    rc, stdout, _ = run_cli(capsys, listing, tmp_path / "out", *TOYS)
    assert rc == 0 and "2 ok" in stdout
    listing.write_text(f"{folder / 'short.mp4'}\n{tmp_path / 'short.mp4'}\n")
    rc, _, stderr = run_cli(capsys, listing, tmp_path / "out", *TOYS)
    assert rc == 2 and "two videos share the id 'short'" in stderr
    rc, _, stderr = run_cli(capsys, tmp_path / "missing", tmp_path / "out", *TOYS)
    assert rc == 2 and "no such file or folder" in stderr


def test_decoders_option_gives_the_same_features(folder, first_run, tmp_path, capsys):
    rc, _, _ = run_cli(capsys, folder / "vfr.mp4", tmp_path, *TOYS, "--decoders", "pyav")
    assert rc == 0
    _, out = first_run
    for name in ("toy_colour", "toy_rms"):
        assert np.array_equal(np.load(tmp_path / "features" / name / "vfr.npy"), np.load(out / "features" / name / "vfr.npy"))


def test_the_vggish_stream_plugs_in(folder, tmp_path, capsys):
    """The real audio stream, with random weights: one row per snippet, zero rows without audio."""
    pytest.importorskip("clipae.extractors.vggish")
    listing = tmp_path / "videos.txt"
    listing.write_text(f"{folder / 'plain.mp4'}\n{folder / 'sub' / 'rotated.mp4'}\n")
    rc, _, stderr = run_cli(capsys, listing, tmp_path / "out", "--streams", "vggish", "--random-weights", "--quiet")
    assert rc == 0 and "RANDOM weights for vggish" in stderr
    records = mf.read_manifest(tmp_path / "out" / "manifest.jsonl")
    for rec in records.values():
        check_files(tmp_path / "out", rec)
        assert rec["weights"] == {"vggish": "random"}
    first = mf.load_stream(tmp_path / "out" / "manifest.jsonl", records["plain"], "vggish", mmap=False)
    assert np.abs(first).sum() > 0
    assert not mf.load_stream(tmp_path / "out" / "manifest.jsonl", records["rotated"], "vggish").any()
    # deterministic on CPU: a second extraction gives the same bits
    run_cli(capsys, listing, tmp_path / "out", "--streams", "vggish", "--random-weights", "--quiet", "--overwrite")
    assert np.array_equal(mf.load_stream(tmp_path / "out" / "manifest.jsonl", records["plain"], "vggish"), first)


def test_progress_bars_over_videos_and_within_long_ones(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(extract, "INNER_BAR_SNIPPETS", 3)   # "long" = more than 3 snippets here
    config = RunConfig(videos=[folder / "plain.mp4", folder / "short.mp4"], out=tmp_path, streams=["toy_colour"],
                       progress=True)
    assert extract.run(config).ok == 2
    err = capsys.readouterr().err
    assert "videos: 100%" in err and "2/2" in err
    assert "plain:" in err and "0/5" in err and "short:" not in err   # 5 snippets get a bar, 1 does not
    run_cli(capsys, folder / "plain.mp4", tmp_path / "quiet", *TOYS)
    assert capsys.readouterr().err == ""


def test_manifest_lines_are_json_with_relative_paths(first_run):
    _, out = first_run
    for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        for entry in rec.get("streams", {}).values():
            assert not Path(entry["path"]).is_absolute()


def test_recycled_frame_buffers_are_reused_only_once_released():
    pool = Recycler(keep=1)
    a = pool.empty((2, 3, 4), np.uint8)
    view = a[1:]                      # a view keeps the buffer taken, like a batch's rows
    address = a.__array_interface__["data"][0]
    del a
    b = pool.empty((2, 3, 4), np.uint8)
    assert b.__array_interface__["data"][0] != address
    del view
    c = pool.empty((4, 3), np.uint16)  # same size, other shape and dtype
    assert c.__array_interface__["data"][0] == address and c.shape == (4, 3) and c.dtype == np.uint16
    del b, c
    assert len(pool._free) == 1        # keep=1: the second idle buffer goes back to the system


def test_the_default_batch_size_is_the_streams_smallest_on_the_cpu_and_16_on_a_gpu():
    from clipae.core.dist import Ranks
    from clipae.extractors.base import get_stream
    from clipae.pipeline.extract_cli import build_parser, config_from_args
    assert (get_stream("i3d_rgb").cpu_batch_size, get_stream("clip").cpu_batch_size,
            get_stream("vggish").cpu_batch_size, get_stream("i3d_flow").cpu_batch_size) == (2, 2, 16, 4)
    parser, dests = build_parser()
    assert "i3d_rgb 2," in " ".join(parser.format_help().split())
    for argv, want in ((["--device", "cpu"], 2), (["--device", "cpu", "--streams", "vggish"], 16),
                       (["--device", "cpu", "--streams", "vggish,i3d_flow"], 4),
                       (["--device", "cpu", "--streams", "vggish,clip"], 2),
                       (["--device", "cuda"], 16), (["--device", "cpu", "--batch-size", "9"], 9)):
        config = config_from_args(parser.parse_args([str(DATA), "out", *argv]), dests, Ranks())
        assert {o.batch_size for o in config.options.values()} == {want}, argv
    with pytest.raises(extract.ExtractionError, match="--batch-size must be at least 1"):
        config_from_args(parser.parse_args([str(DATA), "out", "--batch-size", "0"]), dests, Ranks())


def test_the_weights_help_names_a_file_that_weights_accepts(tmp_path):
    """``--weights``' help gives an example of a declared file; the command line takes that name."""
    import re
    from clipae.core.dist import Ranks
    from clipae.pipeline.extract_cli import config_from_args, parser_for
    argv = [str(tmp_path), str(tmp_path / "out"), "--streams", "i3d_flow"]
    parser, _ = parser_for(argv)
    example, stream = re.search(r"e\.g\. (\w+) for (\w+)", parser.format_help().replace("\n", " ")).groups()
    argv = [str(tmp_path), str(tmp_path / "out"), "--streams", stream, "--weights", f"{example}=/x.pth"]
    parser, dests = parser_for(argv)
    config = config_from_args(parser.parse_args(argv), dests, Ranks.from_env())
    assert config.options[stream].weights_paths == {example: "/x.pth"}


@pytest.mark.skipif(extract._MALLOC_TRIM is None, reason="glibc only")
def test_malloc_arenas_are_capped_unless_the_environment_says(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert extract.limit_malloc_arenas() is True          # mallopt(M_ARENA_MAX, 2) accepted
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert extract.limit_malloc_arenas() is False         # glibc has applied the user's setting


@pytest.mark.skipif(extract._MALLINFO2 is None, reason="glibc >= 2.33 only")
def test_freed_heap_memory_is_handed_back_past_the_threshold(monkeypatch):
    import ctypes
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(64 << 10) for _ in range(256)]   # 16 MiB below the mmap threshold
    for b in blocks[:-1]:                                   # the last keeps them off the heap's top
        libc.free(b)
    free = extract.heap_free_bytes()
    assert free >= 15 << 20
    monkeypatch.setattr(extract, "TRIM_FREE_BYTES", free + (1 << 30))
    assert extract._trim_heap() is False                   # under the threshold: kept
    monkeypatch.setattr(extract, "TRIM_FREE_BYTES", 1 << 20)
    assert extract._trim_heap() is True
    libc.free(blocks[-1])


def test_without_mallinfo2_the_heap_is_trimmed_every_few_seconds(monkeypatch):
    monkeypatch.setattr(extract, "_MALLINFO2", None)
    monkeypatch.setattr(extract, "_MALLOC_TRIM", lambda pad: trims.append(pad))
    trims = []
    assert extract._trim_heap(extract.TRIM_EVERY_S / 2) is False and trims == []
    assert extract._trim_heap(extract.TRIM_EVERY_S + 1) is True and trims == [0]


def test_the_heap_is_looked_at_after_every_batch(folder, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(extract, "_trim_heap", lambda since_last_s: calls.append(since_last_s) or False)
    assert main([str(folder), str(tmp_path / "out"), "--streams", "toy_colour", "--batch-size", "2",
                 "--random-weights", "--quiet"]) == 1   # the folder's broken videos fail
    rows = sum(GOOD.values())
    assert len(calls) >= rows // 2   # at least once per batch of two snippets


def test_clipae_extract_caps_the_arenas_before_anything_else(folder, tmp_path, monkeypatch, capsys):
    from clipae.pipeline import extract_cli
    calls = []
    monkeypatch.setattr(extract_cli, "limit_malloc_arenas", lambda: calls.append(True) or True)
    assert main([str(tmp_path / "no-such-folder"), str(tmp_path / "out"), "--streams", "toy_colour"]) == 2
    assert calls == [True]
    assert "no-such-folder" in capsys.readouterr().err
