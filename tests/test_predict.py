"""A run + a manifest -> predictions -> mAP, with a small stand-in for the trained model.

``FakeRun`` honours the contract of ``clipae.models.run.TrainedRun`` that
:mod:`clipae.eval.predict` documents: its cluster ``k`` fires exactly where the instances of
class ``PERM[k]`` are, so the pipeline scores mAP 1 only if proposals, seconds and the cluster ->
class mapping are all right.
"""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from clipae.cli import eval_main, localize_main
from clipae.datasets.annotations import GroundTruth, load_ground_truth
from clipae.eval.mapping import MAPPING_FILE, ClusterMapping
from clipae.eval.predict import PredictError, predict_results
from clipae.eval.report import score
from clipae.eval.results import build_inputs
from clipae.models import run as trained_runs
from clipae.models.config import Config
from clipae.models.trained_on import TrainedOn
from clipae.pipeline import manifest as mf

CLASSES = ["A", "B", "C"]
PERM = [2, 0, 1]           # cluster k fires on class CLASSES[PERM[k]]
T, STEP = 40, 16 / 25      # snippets per video, seconds per snippet


class FakeRun:
    def __init__(self, unsupervised=True, manifest=None, annotations=None):
        self.config = Config()
        self.classes = list(CLASSES)
        self.trained_on = {"fps": 25.0, "snippet_length": 16, "snippet_stride": 16,
                           "streams": {"i3d_rgb": {"dim": 8}, "clip": {"dim": 4}}, "weights": {"i3d_rgb": "sha256:aa"},
                           "manifest": manifest, "annotations": annotations}
        self.train_assignments = ({f"train_{i}": PERM.index(i % 3) for i in range(6)} if unsupervised else None)
        self.unsupervised = unsupervised
        self.calls = []

    @property
    def extraction(self) -> TrainedOn:       # the real contract object, from the (editable) json
        return TrainedOn.from_json(self.trained_on)

    def predict(self, features, has_audio):
        self.calls.append((sorted(features), has_audio))
        onehot = features["i3d_rgb"][:, :3]
        cas = onehot[:, PERM] if self.unsupervised else onehot
        return {"cas": cas, "attention": cas.max(axis=1), "video_scores": cas.max(axis=0)}


@pytest.fixture()
def dataset(tmp_path):
    """6 training + 6 test videos, one class each, one instance on snippets [a, b]."""
    db = {}
    manifest = tmp_path / "out" / "manifest.jsonl"
    for split, subset in (("train", "validation"), ("test", "test")):
        for i in range(6):
            vid, c = f"{split}_{i}", i % 3
            a, b = 5 + 3 * i, 12 + 3 * i
            rgb = np.zeros((T, 8), np.float32)
            rgb[a:b + 1, c] = 1.0
            for stream, arr in (("i3d_rgb", rgb), ("clip", np.zeros((T, 4), np.float32))):
                mf.save_array_atomic(manifest.parent / "features" / stream / f"{vid}.npy", arr)
            mf.append_record(manifest, {
                "video_id": vid, "status": "ok", "fps": 25.0, "snippet_length": 16, "snippet_stride": 16,
                "num_snippets": T, "duration_s": T * STEP, "has_audio": i % 2 == 0,
                "streams": {s: {"path": f"features/{s}/{vid}.npy", "dim": d, "dtype": "float32"}
                            for s, d in (("i3d_rgb", 8), ("clip", 4))},
                "weights": {"i3d_rgb": "sha256:aa", "clip": "sha256:bb"}})
            db[vid] = {"subset": subset, "duration": T * STEP,
                       "annotations": [{"label": CLASSES[c], "segment": [a * STEP, (b + 1) * STEP]}]}
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps({"version": "t", "taxonomy": [], "database": db}))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return SimpleNamespace(manifest=manifest, gt_path=gt_path, gt=load_ground_truth(gt_path), run_dir=run_dir)


def test_unsupervised_run_predicts_mapped_labels_and_keeps_clusters(dataset):
    run = FakeRun()
    results, notes = predict_results(run, dataset.manifest, dataset.gt, "test", dataset.run_dir)
    assert notes == [] and sorted(results) == [f"test_{i}" for i in range(6)]
    for i in range(6):
        best = results[f"test_{i}"][0]
        assert best["label"] == CLASSES[i % 3] and best["cluster"] == PERM.index(i % 3)
        assert best["segment"] == pytest.approx([(5 + 3 * i) * STEP, (13 + 3 * i) * STEP])
    assert ClusterMapping.load(dataset.run_dir / MAPPING_FILE).cluster_to_class == [CLASSES[p] for p in PERM]
    assert {c[1] for c in run.calls} == {True, False}  # has_audio passed from the manifest
    result = score(build_inputs(dataset.gt, "test", results), np.linspace(0.1, 0.9, 9))
    np.testing.assert_allclose(result.mAP, 1.0)


def test_weakly_supervised_run_uses_its_classes(dataset):
    results, _ = predict_results(FakeRun(unsupervised=False), dataset.manifest, dataset.gt, "test")
    assert results["test_1"][0]["label"] == "B" and "cluster" not in results["test_1"][0]


def test_mismatched_manifest_is_refused(dataset):
    run = FakeRun()
    run.trained_on["weights"]["i3d_rgb"] = "sha256:other"
    with pytest.raises(PredictError, match="weights"):
        predict_results(run, dataset.manifest, dataset.gt, "test", dataset.run_dir)
    run = FakeRun()
    run.trained_on["streams"]["vggish"] = {"dim": 128}
    with pytest.raises(PredictError, match="no vggish features"):
        predict_results(run, dataset.manifest, dataset.gt, "test", dataset.run_dir)
    run = FakeRun()
    run.trained_on["snippet_stride"] = 8
    with pytest.raises(PredictError, match="snippet_stride"):
        predict_results(run, dataset.manifest, dataset.gt, "test", dataset.run_dir)


def test_missing_videos_and_missing_mapping(dataset):
    gt = dataset.gt
    db = dict(gt.database)
    db["test_9"] = {"subset": "test", "duration": 10.0, "annotations": [{"label": "A", "segment": [1, 2]}]}
    bigger = GroundTruth(db, gt.classes)
    with pytest.raises(PredictError, match="1 of the 7 videos of subset 'test' are not extracted"):
        predict_results(FakeRun(), dataset.manifest, bigger, "test", dataset.run_dir)
    results, notes = predict_results(FakeRun(), dataset.manifest, bigger, "test", dataset.run_dir, allow_missing=True)
    assert len(results) == 6 and "missing from the manifest" in notes[0]
    with pytest.raises(PredictError, match="cluster mapping"):
        predict_results(FakeRun(), dataset.manifest, None, None, None)


def test_clipae_eval_run_end_to_end(dataset, monkeypatch, capsys):
    run = FakeRun(manifest=str(dataset.manifest), annotations=str(dataset.gt_path))
    monkeypatch.setattr(trained_runs, "load_run", lambda path: run)
    out_json = dataset.run_dir / "scores.json"
    assert eval_main(["--run", str(dataset.run_dir), "--tiou", "0.3:0.7:0.1", "--json", str(out_json), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "mAP@0.7" in printed and "100.00" in printed
    written = json.loads((dataset.run_dir / "predictions_test.json").read_text())
    assert set(written) == {"version", "results", "external_data"} and len(written["results"]) == 6
    scores = json.loads(out_json.read_text())
    assert scores["tiou"] == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7]) and scores["average"] == pytest.approx(1.0)
    assert set(scores["per_class"]) == set(CLASSES)
    # the predictions file scores the same through --predictions
    assert eval_main(["--predictions", str(dataset.run_dir / "predictions_test.json"),
                     "--annotations", str(dataset.gt_path), "--subset", "test", "--tiou", "0.5"]) == 0
    assert "100.00" in capsys.readouterr().out


def test_predictions_that_cannot_be_written_are_one_line(dataset, monkeypatch, tmp_path, capsys):
    run = FakeRun(manifest=str(dataset.manifest), annotations=str(dataset.gt_path))
    monkeypatch.setattr(trained_runs, "load_run", lambda path: run)
    (tmp_path / "file").write_text("x")
    assert eval_main(["--run", str(dataset.run_dir), "-o", str(tmp_path / "file" / "pred.json"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith(f"clipae-eval: error: {tmp_path / 'file'}")


def test_clipae_localize_with_stand_ins(dataset, monkeypatch, tmp_path, capsys):
    """Extraction and model replaced by stand-ins honouring their contracts; a video without audio."""
    from clipae.eval import localize

    run = FakeRun()
    seen = {}

    def extract_video(path, streams, grid, options, frame_settings=None):
        seen.update(path=path, streams=streams, grid=grid)
        rgb = np.zeros((T, 8), np.float32)
        rgb[10:20, 1] = 1.0  # class B = cluster PERM.index(1)
        record = {"video_id": Path(path).stem, "status": "ok", "fps": 25.0, "snippet_length": 16,
                  "snippet_stride": 16, "num_snippets": T, "duration_s": T * STEP - 0.3, "has_audio": False,
                  "streams": {"i3d_rgb": {}, "clip": {}}, "weights": {"i3d_rgb": "sha256:aa"}}
        return record, {"i3d_rgb": rgb, "clip": np.zeros((T, 4), np.float32)}

    monkeypatch.setattr(trained_runs, "load_run", lambda p: run)
    monkeypatch.setattr(localize, "extract_video", extract_video)
    video = tmp_path / "test_1.mp4"
    video.write_bytes(b"stand-in")
    out, png = tmp_path / "out.json", tmp_path / "timeline.png"
    assert localize_main([str(video), "--run", str(dataset.run_dir), "-o", str(out), "--plot", str(png),
                          "--annotations", str(dataset.gt_path)]) == 0
    printed = capsys.readouterr().out
    assert "no audio track" in printed and "latency:" in printed and "extract" in printed
    assert seen["streams"] == ["i3d_rgb", "clip"] and seen["grid"].stride == 16
    assert run.calls[-1] == (["clip", "i3d_rgb"], False)
    best = json.loads(out.read_text())["results"]["test_1"][0]
    assert best["label"] == "B" and best["cluster"] == PERM.index(1)
    assert best["segment"] == pytest.approx([10 * STEP, 20 * STEP])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # without a run
    monkeypatch.delenv("CLIPAE_RUN", raising=False)
    assert localize_main([str(video)]) == 2
    assert "no run" in capsys.readouterr().err
