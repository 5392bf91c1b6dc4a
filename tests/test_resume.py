"""Resuming never reuses wrong features and never breaks OUT: torn manifest lines, changed
sources, stale or damaged feature files, a crash at every step of the write sequence, write
failures (disk full, read-only, no permission, OUT below a file) and the umask."""
import errno
import json
import logging
import os
import shutil
import stat
import types
from pathlib import Path

import numpy as np
import pytest

import toy_streams  # noqa: F401  (registers toy_colour and toy_rms)
import videogen
from clipae.cli import extract_main as main
from clipae.extractors.base import Extractor, register_stream
from clipae.core import fsio
from clipae.pipeline import manifest as mf

TOYS = ["--stream-module", "toy_streams", "--streams", "toy_colour,toy_rms", "--batch-size", "2", "--quiet"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume_videos")
    videogen.make_video(d / "one.mp4", duration=1.0)
    videogen.make_video(d / "two.mp4", duration=0.7, audio="stereo")
    return d


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory):
    """Uninterrupted runs with ``--toy-scale`` 1 and 2."""
    refs = {}
    for scale in ("1", "2"):
        out = tmp_path_factory.mktemp(f"reference{scale}")
        assert main([str(videos), str(out), *TOYS, "--toy-scale", scale]) == 0
        refs[scale] = out
    return refs


def run_cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_agree(out: Path, digests: bool = True) -> dict:
    """Every ok line points at complete files of its shape holding exactly the bytes its sha256
    names (``digests=False``: right after a crash between a rename and its line, a file may
    already hold new bytes; the next run sees it by the digest)."""
    records = mf.read_manifest(out / mf.MANIFEST_NAME) if (out / mf.MANIFEST_NAME).exists() else {}
    for rec in records.values():
        if rec["status"] != "ok":
            continue
        for name, entry in rec["streams"].items():
            array = np.load(out / entry["path"], allow_pickle=False)
            assert array.shape == (rec["num_snippets"], entry["dim"]), (rec["video_id"], name)
            assert not digests or mf.file_matches_digest(out / entry["path"], entry["sha256"]), (rec["video_id"], name)
    if digests:
        assert not [p for p in out.rglob(".*.tmp")]
    return records


def assert_same_as(out: Path, ref: Path) -> None:
    ours, theirs = assert_agree(out), mf.read_manifest(ref / mf.MANIFEST_NAME)
    assert ours == theirs
    for rec in theirs.values():
        for entry in rec["streams"].values():
            np.testing.assert_array_equal(np.load(out / entry["path"]), np.load(ref / entry["path"]))


# --------------------------------------------------------------------------- torn lines

def test_a_torn_last_line_at_every_byte_offset(tmp_path, caplog):
    path = tmp_path / mf.MANIFEST_NAME
    first = {"video_id": "first", "status": "ok", "num_snippets": 3}
    torn = {"video_id": "vidéo", "status": "ok", "note": "naïve ✓"}   # multi-byte characters too
    after = {"video_id": "after", "status": "failed", "error": "x"}
    head = (json.dumps(first) + "\n").encode()
    line = (json.dumps(torn, ensure_ascii=False) + "\n").encode("utf-8")
    for cut in range(len(line)):   # every byte of the line except its newline is the last one written
        path.write_bytes(head + line[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=mf.__name__):
            assert mf.read_manifest(path) == {"first": first}
            assert mf.last_records(path)[1] == {"first": first}
        warned = [r.getMessage() for r in caplog.records]
        assert len(warned) == (2 if cut else 0)          # one warning per reader call, none without a tear
        assert all("line 2" in w and "\n" not in w for w in warned)
        mf.append_record(path, after)
        records = mf.read_manifest(path)
        assert records["first"] == first and records["after"] == after
        assert list(mf.iter_lines(path))[-1] == after       # the appended line is whole and last
        # the torn fragment stays one skipped line of its own; only a complete JSON object becomes readable
        assert set(records) == ({"first", "vidéo", "after"} if cut == len(line) - 1 else {"first", "after"})
        assert path.read_bytes().endswith(b"\n")


def test_a_torn_line_an_older_version_appended_to_is_skipped(tmp_path, caplog):
    path = tmp_path / mf.MANIFEST_NAME
    glued = '{"video_id": "a", "sta' + json.dumps({"video_id": "b", "status": "ok"})
    path.write_text(json.dumps({"video_id": "z", "status": "ok"}) + "\n" + glued + "\n[1, 2]\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger=mf.__name__):
        assert set(mf.read_manifest(path)) == {"z"}
    assert len(caplog.records) == 1 and "2 incomplete or unreadable" in caplog.records[0].getMessage()


def test_extraction_resumes_over_a_torn_line(videos, reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference["1"], out)
    data = (out / mf.MANIFEST_NAME).read_bytes()
    (out / mf.MANIFEST_NAME).write_bytes(data[:len(data) - len(data.splitlines()[-1]) // 2 - 1])
    rc, stdout, stderr = run_cli(capsys, videos, out, *TOYS)
    assert rc == 0 and "1 ok, 0 failed, 1 already done" in stdout and "Traceback" not in stderr
    assert_same_as(out, reference["1"])


def test_temporary_files_of_a_killed_run_are_removed(videos, reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference["1"], out)
    left = [out / "features" / "toy_colour" / ".one.npy.0badf00d.tmp", out / ".manifest.jsonl.12345678.tmp",
            out / "features" / "toy_rms" / ".two.abcd.npy.tmp"]          # the names an older version used
    for p in left:
        p.write_bytes(b"partial")
    (out / ".notes.tmp").write_text("not ours")
    assert "0 ok, 0 failed, 2 already done" in run_cli(capsys, videos, out, *TOYS)[1]
    assert not any(p.exists() for p in left) and (out / ".notes.tmp").exists()


# --------------------------------------------------------------------------- sources and files

def test_another_video_with_the_same_name_is_not_already_done(videos, reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference["1"], out)
    other = tmp_path / "other"
    other.mkdir()
    videogen.make_colour_video(other / "one.mp4", [("red", 1.0, 25)])
    rc, stdout, _ = run_cli(capsys, other / "one.mp4", out, *TOYS)
    assert rc == 0 and "1 ok, 0 failed, 0 already done" in stdout
    rec = assert_agree(out)["one"]
    assert rec["source_file"]["path"] == str((other / "one.mp4").resolve())
    assert np.load(out / rec["streams"]["toy_colour"]["path"])[0, 0] > 0.9   # red, not the test pattern


def test_a_changed_source_is_redone(videos, reference, tmp_path, capsys):
    src = tmp_path / "videos"
    shutil.copytree(videos, src)
    out = tmp_path / "out"
    assert run_cli(capsys, src, out, *TOYS)[0] == 0
    # re-encoded in place (another size)
    videogen.make_colour_video(src / "one.mp4", [("blue", 1.0, 25)])
    rc, stdout, _ = run_cli(capsys, src, out, *TOYS)
    assert "1 ok, 0 failed, 1 already done" in stdout
    # touched only: redone without --hash-sources (size and mtime), done with it once hashed
    os.utime(src / "two.mp4", ns=(1, 1))
    assert "1 ok, 0 failed, 1 already done" in run_cli(capsys, src, out, *TOYS, "--hash-sources")[1]
    os.utime(src / "two.mp4", ns=(2, 2))
    assert "0 ok, 0 failed, 2 already done" in run_cli(capsys, src, out, *TOYS, "--hash-sources")[1]
    # same size and mtime as the line says, other bytes: only the content hash sees it
    data = bytearray((src / "two.mp4").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (src / "two.mp4").write_bytes(bytes(data))
    os.utime(src / "two.mp4", ns=(1, 1))
    assert "0 ok, 0 failed, 2 already done" in run_cli(capsys, src, out, *TOYS)[1]
    assert "1 already done" in run_cli(capsys, src, out, *TOYS, "--hash-sources")[1].splitlines()[-1]
    assert assert_agree(out)["two"]["source_file"]["sha256"] == mf.sha256_of(src / "two.mp4")


def test_a_damaged_feature_file_is_redone(videos, reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference["1"], out)
    rec = mf.read_manifest(out / mf.MANIFEST_NAME)["one"]
    path = out / rec["streams"]["toy_colour"]["path"]
    garbage = np.load(path) + 1.0                       # same shape, same dtype, other numbers
    np.save(path, garbage)
    rc, stdout, _ = run_cli(capsys, videos, out, *TOYS)
    assert rc == 0 and "1 ok, 0 failed, 1 already done" in stdout
    assert_same_as(out, reference["1"])


def test_a_line_without_digests_or_source_is_redone(videos, reference, tmp_path, capsys):
    """Lines of an older version: their streams are extracted again, not trusted."""
    out = tmp_path / "out"
    shutil.copytree(reference["1"], out)
    records = mf.read_manifest(out / mf.MANIFEST_NAME)
    old = [{**{k: v for k, v in r.items() if k != "source_file"},
            "streams": {n: {k: v for k, v in e.items() if k != "sha256"} for n, e in r["streams"].items()}}
           for r in records.values()]
    mf.write_records(out / mf.MANIFEST_NAME, old)
    rc, stdout, _ = run_cli(capsys, videos, out, *TOYS)
    assert rc == 0 and "2 ok, 0 failed, 0 already done" in stdout
    assert_same_as(out, reference["1"])


# --------------------------------------------------------------------------- a crash at every step

def os_with(**overrides) -> types.SimpleNamespace:
    """The ``os`` module as the manifest writer sees it, with some functions replaced."""
    return types.SimpleNamespace(**{**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")}, **overrides})


class Crash(BaseException):
    """Stands for the process dying (not an Exception: nothing may catch it)."""


def crash_at(monkeypatch, n: int) -> list[str]:
    """Make the ``n``-th step of the write sequence the last one: steps are "temp written" (before
    the rename), "renamed", "before the line" and "line written". Returns the steps seen."""
    seen: list[str] = []

    def step(name: str) -> None:
        seen.append(name)
        if len(seen) == n:
            raise Crash(name)

    def replace(src, dst):
        step("temp written")
        os.replace(src, dst)
        step("renamed")

    real_append = mf.append_record

    def append(path, record):
        step("before the line")
        real_append(path, record)
        step("line written")

    monkeypatch.setattr(fsio, "os", os_with(replace=replace))   # the atomic writes
    monkeypatch.setattr(mf, "append_record", append)
    return seen


@pytest.mark.parametrize("start,redo", [(None, "1"), ("1", "2")], ids=["fresh-out", "other-settings-over-out"])
def test_a_crash_at_every_step_of_the_write_sequence(videos, reference, tmp_path, capsys, monkeypatch, start, redo):
    """Killed at each step, resumed by the same command and by the command that made OUT before:
    lines and files always agree and end equal to an uninterrupted run."""
    n, kinds = 0, set()
    while True:
        n += 1
        out = tmp_path / f"out{n}"
        if start:
            shutil.copytree(reference[start], out)
        with monkeypatch.context() as m:
            seen = crash_at(m, n)
            try:
                main([str(videos), str(out), *TOYS, "--toy-scale", redo])
                crashed = False
            except Crash:
                crashed = True
        capsys.readouterr()
        if not crashed:
            break
        kinds.add(seen[-1])
        assert_agree(out, digests=False)
        for scale in ([start] if start else []) + [redo]:   # OUT's own command first, then the crashed one
            assert main([str(videos), str(out), *TOYS, "--toy-scale", scale]) == 0
            assert_same_as(out, reference[scale])
    assert kinds == {"temp written", "renamed", "before the line", "line written"}
    assert n > 4


# --------------------------------------------------------------------------- write failures

def failing_at(monkeypatch, n: int, code: int) -> None:
    """The ``n``-th fsync of OUT's files fails with ``code`` (where a full disk shows up)."""
    calls = [0]

    def fsync(fd):
        calls[0] += 1
        if calls[0] >= n:
            raise OSError(code, os.strerror(code))
        os.fsync(fd)

    monkeypatch.setattr(mf, "os", os_with(fsync=fsync))     # manifest appends
    monkeypatch.setattr(fsio, "os", os_with(fsync=fsync))   # atomic writes


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENOTDIR])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_write_failure_stops_with_one_line_and_the_summary(videos, reference, tmp_path, capsys, monkeypatch, code, n):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        failing_at(m, n, code)
        rc, stdout, stderr = run_cli(capsys, videos, out, *TOYS)
    assert rc == 2 and "Traceback" not in stdout + stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("clipae-extract: error: cannot write ") and os.strerror(code) in line
    assert "already done;" in stdout.splitlines()[-1]
    assert not (out / "errors.log").exists()
    assert_agree(out)
    rc, stdout, _ = run_cli(capsys, videos, out, *TOYS)            # the problem fixed: the rerun completes
    assert rc == 0
    assert_same_as(out, reference["1"])


def test_out_below_a_plain_file(videos, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    rc, stdout, stderr = run_cli(capsys, videos, tmp_path / "file" / "out", *TOYS)
    assert rc == 2 and "Traceback" not in stdout + stderr
    [line] = stderr.strip().splitlines()
    assert "cannot write" in line and "Not a directory" in line
    assert "0 ok, 0 failed, 0 already done" in stdout


def test_an_unreadable_manifest_is_one_line(videos, tmp_path, capsys):
    (tmp_path / "out" / mf.MANIFEST_NAME).mkdir(parents=True)
    rc, stdout, stderr = run_cli(capsys, videos, tmp_path / "out", *TOYS)
    assert rc == 2 and "Traceback" not in stdout + stderr
    assert stderr == f"clipae-extract: error: cannot read {tmp_path / 'out' / mf.MANIFEST_NAME}: Is a directory\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out(videos, reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference["1"], out)
    os.unlink(out / mf.MANIFEST_NAME)
    for d in [out, *out.rglob("*")]:
        if d.is_dir():
            d.chmod(0o555)
    try:
        rc, stdout, stderr = run_cli(capsys, videos, out, *TOYS)
        assert rc == 2 and "Traceback" not in stdout + stderr and "Permission denied" in stderr
    finally:
        for d in [out, *out.rglob("*")]:
            if d.is_dir():
                d.chmod(0o755)
    assert run_cli(capsys, videos, out, *TOYS)[0] == 0


# --------------------------------------------------------------------------- the umask

@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_output_files_honour_the_umask(videos, tmp_path, capsys, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / "out"
        assert run_cli(capsys, videos, out, *TOYS)[0] == 0
        mf.merge_shards(out)
        mf.write_records(out / "copy.jsonl", mf.iter_lines(out / mf.MANIFEST_NAME))
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 6
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p


# --------------------------------------------------------------------------- non-finite features

@register_stream("toy_nan_on_red")
class NaNOnRed(Extractor):
    """NaN rows for red snippets, like a network that overflows on some inputs only."""
    dim = 2
    inputs = ("frames",)

    def __call__(self, batch):
        red = batch.frames[..., 0].mean(axis=(1, 2, 3)) > 200
        rows = np.zeros((len(batch), 2), np.float32)
        rows[red] = np.nan
        return rows


def test_non_finite_features_fail_their_video_only(videos, tmp_path, capsys):
    folder = tmp_path / "videos"
    shutil.copytree(videos, folder)
    videogen.make_colour_video(folder / "red.mp4", [("red", 0.6, 25)])
    out = tmp_path / "out"
    rc, stdout, stderr = run_cli(capsys, folder, out, "--stream-module", "toy_streams", "--streams", "toy_nan_on_red",
                                 "--batch-size", "8", "--quiet")
    assert rc == 1 and "Traceback" not in stdout + stderr
    assert "failed red: non-finite values in toy_nan_on_red (2 of 2 values are NaN or infinite)" in stdout
    assert "2 ok, 1 failed" in stdout                     # the videos sharing its batch are not harmed
    records = assert_agree(out)
    assert records["red"]["status"] == "failed" and not (out / "features" / "toy_nan_on_red" / "red.npy").exists()


def test_i3d_weights_full_of_nan_fail_every_video(videos, tmp_path, capsys):
    import torch
    from clipae.extractors.i3d import i3d
    state = {k: torch.full_like(v, float("nan")) for k, v in i3d("rgb").state_dict().items()
             if v.is_floating_point()}
    torch.save(state, tmp_path / "nan.pt")
    rc, stdout, stderr = run_cli(capsys, videos / "two.mp4", tmp_path / "out", "--streams", "i3d_rgb",
                                 "--weights", f"i3d_rgb={tmp_path / 'nan.pt'}", "--quiet")
    assert rc == 1 and "Traceback" not in stdout + stderr
    assert "failed two: non-finite values in i3d_rgb (2048 of 2048 values are NaN or infinite)" in stdout
