"""Network batches across videos (decoding/packing.py) and their use by the extraction runner."""

import numpy as np
import pytest

import toy_streams  # noqa: F401  (registers toy_colour and toy_rms)
import videogen
from clipae.extractors.base import Extractor, ExtractorOptions, SnippetBatch, get_stream
from clipae.decoding.decode import InputError
from clipae.pipeline.extract import RunConfig, extract_video, extract_videos, run
from clipae.pipeline import manifest as mf
from clipae.decoding.packing import Packed, VideoDecoded, VideoFailed, pack
from clipae.decoding.snippets import VideoFacts


class FakeSource:
    """``n`` snippets in batches of ``per_batch``; row values are ``key * 10 + snippet``."""

    def __init__(self, key, n, per_batch=3, width=8, fail_after=None):
        self.key, self.n, self.per_batch, self.width, self.fail_after = key, n, per_batch, width, fail_after
        self.closed = False

    def facts(self):
        return VideoFacts(1.0, 25.0, 25, self.n, False)

    def __iter__(self):
        for first in range(0, self.n, self.per_batch):
            if self.fail_after is not None and first >= self.fail_after:
                raise InputError("broken in the middle")
            index = np.arange(first, min(first + self.per_batch, self.n))
            frames = np.full((len(index), 1, 4, self.width, 3), 0, np.uint8) + (self.key * 10 + index)[:, None, None, None, None].astype(np.uint8)
            yield SnippetBatch(index=index, frames=frames)

    def close(self):
        self.closed = True


def rows_of(packed):
    """[(key, snippet), ...] of a packed batch, read back from the frame values."""
    out, start = [], 0
    for key, n in packed.parts:
        for v, i in zip(packed.batch.frames[start:start + n, 0, 0, 0, 0], packed.batch.index[start:start + n]):
            assert v == key * 10 + i
            out.append((key, int(i)))
        start += n
    return out


def test_short_videos_fill_batches_in_order():
    sources = [FakeSource(1, 3), FakeSource(2, 1), FakeSource(3, 5), FakeSource(4, 2)]
    events = list(pack([(s.key, "g", s) for s in sources], batch_size=4))
    packed = [e for e in events if isinstance(e, Packed)]
    assert [len(p.batch) for p in packed] == [4, 4, 3]
    assert [p.parts for p in packed] == [[(1, 3), (2, 1)], [(3, 4)], [(3, 1), (4, 2)]]
    assert [r for p in packed for r in rows_of(p)] == [(k, i) for s in sources for k, i in [(s.key, j) for j in range(s.n)]]
    assert all(s.closed for s in sources)
    # each video opens before its rows and is decoded after its last batch was read
    order = [(type(e).__name__, getattr(e, "key", None)) for e in events]
    marks = [order.index((kind, k)) for k in (1, 2, 3, 4) for kind in ("VideoOpened", "VideoDecoded")]
    assert marks == sorted(marks)
    assert order.index(("VideoDecoded", 1)) < order.index(("Packed", None))  # video 1's rows were still pending
    assert order[-1] == ("Packed", None) and order[-2] == ("VideoDecoded", 4)


def test_another_group_or_frame_size_starts_a_new_batch():
    sources = [(1, "a", FakeSource(1, 2)), (2, "b", FakeSource(2, 2)), (3, "b", FakeSource(3, 1, width=10)),
               (4, "b", FakeSource(4, 1, width=10))]
    packed = [e for e in pack(sources, batch_size=8) if isinstance(e, Packed)]
    assert [p.parts for p in packed] == [[(1, 2)], [(2, 2)], [(3, 1), (4, 1)]]


def test_a_video_failing_midway_loses_only_its_own_rows():
    sources = [FakeSource(1, 2), FakeSource(2, 7, fail_after=3), FakeSource(3, 3)]
    events = list(pack([(s.key, "g", s) for s in sources], batch_size=4))
    failed = [e for e in events if isinstance(e, VideoFailed)]
    assert [(e.key, str(e.error)) for e in failed] == [(2, "broken in the middle")]
    rows = [r for e in events if isinstance(e, Packed) for r in rows_of(e)]
    # video 2's first batch (3 rows) was pending with video 1's rows: 1 row went out in a full batch
    assert rows == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    assert not any(isinstance(e, VideoDecoded) and e.key == 2 for e in events)
    assert all(s.closed for s in sources)


def test_bad_batch_size():
    with pytest.raises(ValueError):
        list(pack([], 0))


@pytest.fixture(scope="module")
def shorts(tmp_path_factory):
    d = tmp_path_factory.mktemp("shorts")
    for i, seconds in enumerate([0.5, 1.2, 2.0, 0.3]):   # 1, 2, 4 and 1 snippets
        videogen.make_video(d / f"v{i}.mp4", duration=seconds, audio="mono" if i != 2 else None)
    return d


class Counting:
    """Wraps a stream's __call__ to record the batch sizes it sees."""

    def __init__(self, monkeypatch, name):
        self.sizes = []
        cls = get_stream(name)
        original = cls.__call__

        def call(ex, batch):
            self.sizes.append(len(batch))
            return original(ex, batch)

        monkeypatch.setattr(cls, "__call__", call)


def test_runner_packs_short_videos_and_rows_equal_one_video_at_a_time(shorts, tmp_path, monkeypatch):
    options = {n: ExtractorOptions(batch_size=4) for n in ("toy_colour", "toy_rms")}
    alone = {p.stem: extract_video(p, ["toy_colour", "toy_rms"], options=options)[1] for p in sorted(shorts.glob("*.mp4"))}
    colour = Counting(monkeypatch, "toy_colour")
    rms = Counting(monkeypatch, "toy_rms")
    summary = run(RunConfig(videos=sorted(shorts.glob("*.mp4")), out=tmp_path, streams=["toy_colour", "toy_rms"],
                            options=options, progress=False))
    assert summary.ok == 4
    # 1 + 2 rows share a batch; v2 has no audio (another group), v3 joins it
    assert colour.sizes == [3, 4, 1] and rms.sizes == [3, 1]
    records = mf.read_manifest(tmp_path / "manifest.jsonl")
    for vid, features in alone.items():
        for name, array in features.items():
            np.testing.assert_array_equal(mf.load_stream(tmp_path / "manifest.jsonl", records[vid], name), array)
    assert not mf.load_stream(tmp_path / "manifest.jsonl", records["v2"], "toy_rms").any()


class ValueStream(Extractor):
    """Returns each snippet's frame value (``key * 10 + snippet`` of FakeSource); fails on value 12."""
    name, dim, inputs = "value", 1, ("frames",)

    def __call__(self, batch):
        values = batch.frames[:, 0, 0, 0, 0].astype(np.float32)
        if (values == 12).any():
            raise RuntimeError("snippet 2 of video 1")
        return values[:, None]


def test_a_stream_failing_on_a_shared_batch_fails_only_its_video():
    stream = {"value": ValueStream(ExtractorOptions())}
    sources = [FakeSource(1, 5, per_batch=5), FakeSource(2, 1), FakeSource(3, 4)]
    results = {r.key: r for r in extract_videos([(s.key, stream, s) for s in sources], batch_size=2)}
    assert str(results[1].error) == "snippet 2 of video 1" and "Traceback" in results[1].trace
    # video 1's last row shares a batch with video 2's only row, after video 1 has failed
    np.testing.assert_array_equal(results[2].features["value"][:, 0], [20])
    np.testing.assert_array_equal(results[3].features["value"][:, 0], [30, 31, 32, 33])
    assert results[2].facts.num_snippets == 1 and results[2].error is None


def test_per_video_batches_keep_videos_apart(shorts, tmp_path, monkeypatch, capsys):
    from clipae.cli import extract_main as main
    colour = Counting(monkeypatch, "toy_colour")
    assert main([str(shorts), str(tmp_path), "--stream-module", "toy_streams", "--streams", "toy_colour",
                 "--batch-size", "4", "--per-video-batches", "--quiet"]) == 0
    assert colour.sizes == [1, 2, 4, 1]


class ShortSource(FakeSource):
    """Says it has ``n`` snippets but its batches stop one short, or run one over."""

    def __init__(self, key, n, extra):
        super().__init__(key, n)
        self.extra = extra

    def __iter__(self):
        real, self.n = self.n, self.n + self.extra
        yield from super().__iter__()
        self.n = real


@pytest.mark.parametrize("extra", [-1, 1])
def test_a_video_with_the_wrong_number_of_rows_fails_instead_of_vanishing(extra):
    stream = {"value": ValueStream(ExtractorOptions())}
    sources = [FakeSource(3, 2), ShortSource(4, 4, extra), FakeSource(5, 1)]
    results = {r.key: r for r in extract_videos([(s.key, stream, s) for s in sources], batch_size=4)}
    assert set(results) == {3, 4, 5}
    assert str(results[4].error) == f"{4 + extra} rows for 4 snippets"
    np.testing.assert_array_equal(results[5].features["value"][:, 0], [50])
