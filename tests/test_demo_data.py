"""The demo's rendered dataset: videos decode, carry sound, and show what the ground truth says."""
import hashlib
import json

import av
import numpy as np
import pytest

from clipae.demo import data as dd
from clipae.datasets.annotations import load_ground_truth

SPEC = dd.DemoDatasetSpec(num_train=3, num_test=2, duration_s=(4.0, 5.0), instances=(1, 2),
                          instance_s=(1.0, 1.5), min_gap_s=0.6, seed=7)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return dd.build_dataset(tmp_path_factory.mktemp("demo"), SPEC)


def _decode(path):
    """(frames (N, H, W, 3) uint8, fps, audio (S,) float32, sample_rate)"""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        fps = float(v.average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        sr = a.codec_context.sample_rate
        audio = np.concatenate([f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)])
    return frames, fps, audio.astype(np.float32), sr


def _mask(n, segments, scale):
    m = np.zeros(n, bool)
    for s, e in segments:
        m[int(round(s * scale)):int(round(e * scale))] = True
    return m


def test_ground_truth_schema_and_subsets(dataset):
    gt = json.loads(dataset.ground_truth.read_text())
    assert gt["version"] and {n["nodeName"] for n in gt["taxonomy"]} >= set(SPEC.kinds)
    db = gt["database"]
    assert sum(v["subset"] == dd.TRAIN_SUBSET for v in db.values()) == 3
    assert sum(v["subset"] == dd.TEST_SUBSET for v in db.values()) == 2
    # every kind appears in training (labels are balanced within a subset)
    assert {a["label"] for v in db.values() if v["subset"] == dd.TRAIN_SUBSET for a in v["annotations"]} == set(SPEC.kinds)
    for vid, v in db.items():
        assert 4.0 <= v["duration"] <= 5.0
        segs = sorted(a["segment"] for a in v["annotations"])
        assert 1 <= len(segs) <= 2 and len({a["label"] for a in v["annotations"]}) == 1
        for (s, e), nxt in zip(segs, segs[1:] + [[v["duration"] + SPEC.min_gap_s, None]]):
            assert SPEC.min_gap_s - 1e-9 <= s and 1.0 - 1e-9 <= e - s <= 1.5 + 1e-9
            assert nxt[0] - e >= SPEC.min_gap_s - 1e-9           # gaps between segments and at the end
            assert abs(s * SPEC.fps - round(s * SPEC.fps)) < 1e-6  # frame boundaries
    assert load_ground_truth(dataset.ground_truth).classes == sorted(SPEC.kinds)


def test_videos_decode_with_sound_and_show_their_ground_truth(dataset):
    db = json.loads(dataset.ground_truth.read_text())["database"]
    for vid, v in db.items():
        frames, fps, audio, sr = _decode(dataset.video_path(vid))
        assert fps == SPEC.fps and frames.shape[1:] == (SPEC.height, SPEC.width, 3)
        assert len(frames) == round(v["duration"] * SPEC.fps)
        assert sr == SPEC.sample_rate and abs(len(audio) / sr - v["duration"]) < 0.1
        label = v["annotations"][0]["label"]
        segments = [a["segment"] for a in v["annotations"]]
        # picture: the kind's colour is on screen exactly during its segments
        colour = np.array(dd.ACTION_KINDS[label].colour) * 255
        coloured = (np.abs(frames.astype(float) - colour).max(axis=-1) < 50).sum(axis=(1, 2))
        inside = _mask(len(frames), segments, SPEC.fps)
        assert coloured[inside].min() > 100 and coloured[~inside].max() < 5, vid
        # sound: much louder during the segments than in the background
        loud = _mask(len(audio), segments, sr)
        rms_in = np.sqrt(np.mean(audio[loud] ** 2))
        rms_out = np.sqrt(np.mean(audio[~loud] ** 2))
        assert rms_in > 4 * rms_out, (vid, rms_in, rms_out)


def test_kinds_sound_different():
    t = np.arange(16000) / 16000.0
    spectra = {k: np.abs(np.fft.rfft(kind.sound(t))) for k, kind in dd.ACTION_KINDS.items()}
    peaks = {k: int(np.argmax(s)) for k, s in spectra.items()}
    assert abs(peaks["BouncingBall"] - 440) <= 2
    assert 600 <= peaks["SlidingSquare"] <= 1200
    # the noise bursts spread their energy: no single bin holds much of it
    flat = spectra["SpinningBar"]
    assert flat.max() < 0.05 * flat.sum()


def test_same_seed_same_bytes_and_reuse(dataset, tmp_path):
    again = dd.build_dataset(tmp_path, SPEC)
    assert again.ground_truth.read_bytes() == dataset.ground_truth.read_bytes()
    for plan in dataset.plans:
        a, b = dataset.video_path(plan.video_id), again.video_path(plan.video_id)
        assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    # a complete folder is reused without rendering again
    mtimes = {p: p.stat().st_mtime_ns for p in again.videos.iterdir()}
    dd.build_dataset(tmp_path, SPEC)
    assert {p: p.stat().st_mtime_ns for p in again.videos.iterdir()} == mtimes
    # another seed plans another dataset
    other = dd.plan_dataset(dd.DemoDatasetSpec(**{**SPEC.__dict__, "seed": 8}))
    assert [p.segments for p in other] != [p.segments for p in dataset.plans]


def test_impossible_spec_is_refused():
    with pytest.raises(dd.DemoDataError, match="cannot hold"):
        dd.DemoDatasetSpec(duration_s=(3.0, 4.0), instances=(2, 3), instance_s=(2.0, 3.0))
    with pytest.raises(dd.DemoDataError, match="unknown action kind"):
        dd.DemoDatasetSpec(kinds=("Juggling",))
