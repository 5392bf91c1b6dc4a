"""Checkpoint files: digests hashed once per file content and remembered (``weights_digests``),
and loading in either ``torch.save`` format."""
import json
import os

import pytest
import torch

from clipae.core import fsio, weights
from clipae.core.weights import WeightsError, WeightsSpec, load_checkpoint, resolve_weights, weights_digests


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """A fresh cache file, and a list that grows by one at every real hash."""
    calls = []
    monkeypatch.setattr(weights, "DIGEST_CACHE", tmp_path / "cache" / "digests.json")

    def digests(path, chunk=1 << 20):
        calls.append(path)
        return fsio.digests(path, chunk)
    monkeypatch.setattr(weights, "digests", digests)
    return calls


def test_a_file_is_hashed_once_then_again_when_it_changes(counted, tmp_path):
    f = tmp_path / "net.pth"
    f.write_bytes(b"first weights")
    want = fsio.digests(f)
    assert weights_digests(f) == want and weights_digests(f) == want and len(counted) == 1
    moved = tmp_path / "renamed.pth"
    os.replace(f, moved)                                  # a rename keeps the inode: still remembered
    assert weights_digests(moved) == want and len(counted) == 1
    moved.write_bytes(b"other weights")                  # rewritten: new size and time
    assert weights_digests(moved) == fsio.digests(moved) != want and len(counted) == 2
    st = moved.stat()
    moved.write_bytes(b"other weightZ")                  # same size, another time: hashed again
    os.utime(moved, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert weights_digests(moved) == fsio.digests(moved) and len(counted) == 3


def test_a_bad_or_foreign_cache_is_ignored(counted, tmp_path):
    f = tmp_path / "net.pth"
    f.write_bytes(b"weights")
    weights.DIGEST_CACHE.parent.mkdir()
    for text in ("{not json", "[1, 2]", json.dumps({"x": {"stat": "nonsense"}})):
        weights.DIGEST_CACHE.write_text(text)
        assert weights_digests(f) == fsio.digests(f)
    assert len(counted) == 3
    entry = json.loads(weights.DIGEST_CACHE.read_text())
    key = next(iter(k for k in entry if k != "x"))
    entry[key]["sha256"] = 5                              # not a string: hashed again
    weights.DIGEST_CACHE.write_text(json.dumps(entry))
    assert weights_digests(f) == fsio.digests(f) and len(counted) == 4


def test_an_unwritable_cache_does_not_stop_the_run(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(weights, "DIGEST_CACHE", blocker / "digests.json")   # its parent is a file
    f = tmp_path / "net.pth"
    f.write_bytes(b"weights")
    assert weights_digests(f) == fsio.digests(f)


def test_verification_reads_the_remembered_digest_and_still_refuses_a_changed_file(counted, tmp_path):
    f = tmp_path / "weights" / "net.pth"
    f.parent.mkdir()
    f.write_bytes(b"released weights")
    spec = WeightsSpec(stream="s", filename="net.pth", url="https://example.invalid/net.pth",
                       sha256=fsio.sha256_of(f), key_format="-")
    for _ in range(3):
        assert resolve_weights(spec, weights_dir=f.parent, download=False).identity == "sha256:" + spec.sha256
    assert len(counted) == 1
    f.write_bytes(b"tampered weights")
    with pytest.raises(WeightsError, match="expected"):
        resolve_weights(spec, weights_dir=f.parent, download=False)
    local = resolve_weights(spec, path=str(f))            # --weights NAME=PATH records what it sees
    assert local.identity == "sha256:" + fsio.sha256_of(f) and len(counted) == 2


@pytest.mark.parametrize("zip_format", [True, False])
def test_both_save_formats_load_the_same_tensors(tmp_path, zip_format):
    """The zip format is memory-mapped, the legacy one read whole: the same values either way, and
    tensors the caller may write to (copy-on-write, the file is left as it was)."""
    state = {"conv.weight": torch.randn(4, 3, 3), "conv.bias": torch.arange(4.0)}
    path = tmp_path / "net.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    before = path.read_bytes()
    loaded = load_checkpoint(path)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    loaded["conv.bias"].add_(1.0)
    assert path.read_bytes() == before and torch.equal(load_checkpoint(path)["conv.bias"], state["conv.bias"])
