"""One typed contract for a trained run: ``clipae-train`` writes its proposal settings (part of the
Config) and what it was trained on; ``clipae-eval --run`` reads them through the real run object."""
from __future__ import annotations

import json

import pytest
import yaml

from clipae.cli import eval_main, train_main
from clipae.models.config import NMS_KINDS
from clipae.models.run import load_run
from clipae.models.synthetic import SyntheticSpec
from tiny_runs import DIMS, train_tiny
from clipae.eval.proposals import NMS

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    spec = SyntheticSpec(train=12, test=6, classes=2, snippets=48, dims=DIMS, seed=3)
    run, _ = train_tiny(tmp_path_factory.mktemp("contract"), spec, "--mode", "weakly",
                        "--set", "proposals.max_per_video=1")
    return run


def proposals_per_video(path) -> list[int]:
    return [len(v) for v in json.loads(path.read_text())["results"].values()]


def test_proposal_settings_are_part_of_the_run(run_dir, tmp_path, capsys):
    run = load_run(run_dir)
    assert run.config.proposals.max_per_video == 1
    # clipae-eval --run without --manifest: the run records its manifest and annotations
    assert eval_main(["--run", str(run_dir), "-o", str(tmp_path / "one.json"), "--quiet"]) == 0
    counts = proposals_per_video(tmp_path / "one.json")
    assert counts and max(counts) == 1
    # a run folder from before proposals were part of the config: the defaults are filled in
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    del cfg["proposals"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert load_run(run_dir).config.proposals.max_per_video is None
    assert eval_main(["--run", str(run_dir), "-o", str(tmp_path / "all.json"), "--quiet"]) == 0
    assert max(proposals_per_video(tmp_path / "all.json")) > 1
    capsys.readouterr()


def test_a_bad_proposal_setting_is_one_line_before_training(tmp_path, capsys):
    assert train_main(["--manifest", str(tmp_path / "m.jsonl"), "--annotations", str(tmp_path / "gt.json"),
                       "--out", str(tmp_path / "r"),
                       "--set", "proposals.nms=fancy"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "proposals.nms must be one of soft, hard" in err


def test_the_nms_names_the_config_accepts_are_the_registered_ones():
    assert list(NMS) == list(NMS_KINDS)


def test_an_old_run_folder_loads_with_defaults_or_is_refused_in_one_line(run_dir, tmp_path, capsys):
    import shutil

    from clipae.models.trained_on import FILE, TrainedOn
    recorded = TrainedOn.load(run_dir)
    assert recorded.manifest and recorded.annotations and recorded.grid.as_dict()["snippet_stride"] > 0
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    obj = json.loads((old / FILE).read_text())
    for key in ("manifest", "annotations", "config_hash"):       # what early run folders did not record
        obj.pop(key)
    for entry in obj["streams"].values():
        entry.pop("options", None)
    (old / FILE).write_text(json.dumps(obj))
    on = load_run(old).extraction
    assert on.manifest is None and on.config_hash == [] and all(r.options == {} for r in on.streams.values())
    assert eval_main(["--run", str(old), "--quiet"]) == 2
    assert "pass --manifest" in capsys.readouterr().err
    assert eval_main(["--run", str(old), "--manifest", recorded.manifest, "--annotations", recorded.annotations,
                      "-o", str(tmp_path / "p.json"), "--quiet"]) == 0
    del obj["fps"]
    (old / FILE).write_text(json.dumps(obj))
    capsys.readouterr()
    assert eval_main(["--run", str(old), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not record its snippet grid (fps)" in err


def test_a_run_folder_from_before_the_background_contrast_keeps_its_video_scores(run_dir, tmp_path):
    import shutil
    import numpy as np
    from clipae.pipeline.manifest import load_stream, read_manifest
    from clipae.models.trained_on import TrainedOn
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    manifest = TrainedOn.load(run_dir).manifest
    record = next(iter(read_manifest(manifest).values()))
    run = load_run(old)
    feats = {s: np.asarray(load_stream(manifest, record, s)) for s in run.streams}
    assert run.config.model.background_contrast == 0.5            # what clipae-train wrote: today's default
    today = run.predict(feats, record["has_audio"])["video_scores"]
    cfg = yaml.safe_load((old / "config.yaml").read_text())
    assert cfg["loss"]["background_contrast"] == 1.0
    del cfg["model"]["background_contrast"], cfg["loss"]["background_contrast"]   # as an earlier version's folder
    (old / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = load_run(old)
    assert before.config.model.background_contrast == 0.0 and before.model.background_contrast == 0.0
    assert before.config.loss.background_contrast == 0.0          # resuming it trains as it was trained
    earlier = before.predict(feats, record["has_audio"])["video_scores"]
    assert not np.allclose(today, earlier)
    cfg["model"]["background_contrast"] = 0.0
    (old / "config.yaml").write_text(yaml.safe_dump(cfg))
    np.testing.assert_allclose(load_run(old).predict(feats, record["has_audio"])["video_scores"], earlier)
