"""clipae-train end to end on small synthetic data: run folder, inference API, the unsupervised loop,
CAF + CCP against the baseline, determinism, resume, and the one-line errors."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import average_precision_score

from clipae.cli import eval_main, train_main
from clipae.models import train
from clipae.models.config import load_config
from clipae.models.run import load_run
from clipae.models.synthetic import SyntheticSpec, generate
from clipae.datasets.annotations import load_ground_truth
from clipae.pipeline.manifest import read_manifest, write_records

TINY = ["data.num_segments=64", "model.hidden_dim=32", "model.attention_dim=16", "model.caf_dim=16",
        "model.ccp_dim=16", "model.dropout=0.3", "train.lr=1e-3", "train.batch_size=4", "train.threads=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    spec = SyntheticSpec(train=24, test=12, classes=3, snippets=64,
                         dims={"i3d_rgb": 32, "i3d_flow": 32, "clip": 32, "vggish": 16}, seed=0)
    return generate(tmp_path_factory.mktemp("synthetic"), spec)


def run_train(data, out, *args, overrides=(), manifest=None, annotations=None, tiny=True):
    argv = ["--manifest", str(manifest or data["manifest"]), "--annotations", str(annotations or data["ground_truth"]),
            "--out", str(out), "--quiet", *args]
    for o in [*(TINY if tiny else []), *overrides]:
        argv += ["--set", o]
    return train_main(argv)


def metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def attention_ap(run_dir, data, subset="test"):
    """Snippet-level average precision of the foreground attention against the true instances."""
    gt = load_ground_truth(data["ground_truth"]).subset(subset)
    run = load_run(run_dir, device="cpu")
    pred = run.predict_manifest(data["manifest"], list(gt.database))
    ys, ss = [], []
    for vid, p in pred.items():
        y = np.zeros(len(p["attention"]))
        for a in gt.database[vid]["annotations"]:
            s, e = a["segment"]
            y[int(round(s * 25 / 16)):int(round(e * 25 / 16))] = 1
        ys.append(y)
        ss.append(p["attention"])
    return average_precision_score(np.concatenate(ys), np.concatenate(ss)), np.concatenate(ys).mean()


@pytest.fixture(scope="module")
def weakly_runs(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("weakly")
    assert run_train(data, root / "full", "--mode", "weakly", overrides=["train.epochs_per_round=15"]) == 0
    assert run_train(data, root / "base", "--mode", "weakly", "--no-caf", "--no-ccp",
                     overrides=["train.epochs_per_round=15"]) == 0
    return root


def test_synthetic_generator_writes_a_thumos_shaped_dataset(data):
    recs = read_manifest(data["manifest"])
    gt = load_ground_truth(data["ground_truth"])
    assert len(recs) == 36 and set(recs) == set(gt.database)
    assert len(gt.subset("validation").database) == 24 and len(gt.subset("test").database) == 12
    assert gt.classes == ["action_00", "action_01", "action_02"]
    silent = [r for r in recs.values() if not r["has_audio"]]
    for r in recs.values():
        assert {"i3d_rgb", "i3d_flow", "clip", "vggish"} <= set(r["streams"]) and r["snippet_stride"] == 16
        vid = gt.database[r["video_id"]]
        assert 2 <= len(vid["annotations"]) and all(0 <= a["segment"][0] < a["segment"][1] <= vid["duration"]
                                                    for a in vid["annotations"])
    a = np.load(data["root"] / silent[0]["streams"]["vggish"]["path"])
    assert a.shape == (silent[0]["num_snippets"], 16) and not a.any()   # no audio track: zero rows


def test_weakly_run_folder_and_inference_api(data, weakly_runs):
    run_dir = weakly_runs / "full"
    for name in ("config.yaml", "extraction.json", "checkpoint.pt", "metrics.csv", "rounds.csv", "train.log"):
        assert (run_dir / name).is_file(), name
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["train"]["mode"] == "weakly" and cfg["model"]["hidden_dim"] == 32 and cfg["cluster"]["num_clusters"] == 3
    ex = json.loads((run_dir / "extraction.json").read_text())
    assert (ex["fps"], ex["snippet_length"], ex["snippet_stride"]) == (25.0, 16, 16)
    assert set(ex["streams"]) == {"i3d_rgb", "i3d_flow", "clip", "vggish"} and ex["weights"]["clip"] == "random"
    assert ex["streams"]["clip"]["settings"] == {"synthetic": True, "seed": 0}
    run = load_run(run_dir, device="cpu")
    assert run.classes == ["action_00", "action_01", "action_02"] and run.train_assignments == {}
    recs = read_manifest(data["manifest"])
    vid = "video_test_0000001"
    feats = {s: np.load(data["root"] / recs[vid]["streams"][s]["path"]) for s in run.streams}
    out = run.predict(feats, has_audio=recs[vid]["has_audio"])
    t = recs[vid]["num_snippets"]
    assert out["cas"].shape == (t, 3) and out["attention"].shape == (t,) and out["video_scores"].shape == (3,)
    assert all(0 <= v.min() and v.max() <= 1 for v in out.values())
    batched = run.predict_manifest(data["manifest"], [vid, "video_test_0000002"])
    np.testing.assert_allclose(batched[vid]["attention"], out["attention"], atol=1e-5)
    true = load_ground_truth(data["ground_truth"]).database[vid]["annotations"][0]["label"]
    assert run.classes[int(out["video_scores"].argmax())] == true


def test_eval_run_finds_its_manifest_and_ground_truth(data, weakly_runs, capsys):
    recorded = json.loads((weakly_runs / "full" / "extraction.json").read_text())
    assert recorded["manifest"] == str(data["manifest"].resolve())
    assert recorded["annotations"] == str(data["ground_truth"].resolve())
    assert eval_main(["--run", str(weakly_runs / "full"), "--quiet", "-o", str(weakly_runs / "pred.json")]) == 0
    out = capsys.readouterr().out
    assert "subset test" in out and "mAP@0.1" in out


def test_losses_fall(weakly_runs):
    rows = metrics(weakly_runs / "full")
    assert len(rows) == 15
    first, last = rows[0], rows[-1]
    assert float(last["mil"]) < 0.6 * float(first["mil"])
    assert float(last["decor"]) < float(first["decor"]) and float(last["insdis"]) < float(first["insdis"])
    assert float(last["total"]) < float(first["total"])


def test_caf_and_ccp_beat_the_baseline_where_the_data_needs_them(data, weakly_runs):
    full, chance = attention_ap(weakly_runs / "full", data)
    base, _ = attention_ap(weakly_runs / "base", data)
    assert base > chance + 0.2                                          # the baseline localises cores
    assert full > base + 0.15                                           # VLP + audio give whole instances


def test_unsupervised_loop_scores_far_above_chance(data, tmp_path):
    assert run_train(data, tmp_path / "run", "--rounds", "2", overrides=["train.epochs_per_round=8"]) == 0
    with open(tmp_path / "run" / "rounds.csv") as f:
        rounds = list(csv.DictReader(f))
    assert len(rounds) == 2 and sum(int(x) for x in rounds[-1]["sizes"].split()) == 24
    assert float(rounds[0]["cluster_acc"]) >= 0.9                              # round 0: the label-free split
    # 24 videos, 2 short rounds: the re-embedded clusters move (0.79 accuracy here); chance is about 0
    assert float(rounds[-1]["nmi"]) > 0.5 and float(rounds[-1]["ari"]) > 0.4
    run = load_run(tmp_path / "run", device="cpu")
    assert run.classes == ["0", "1", "2"] and len(run.train_assignments) == 24
    saved = json.loads((tmp_path / "run" / "assignments.json").read_text())
    assert saved["round"] == 1 and saved["assignments"] == run.train_assignments
    ap, chance = attention_ap(tmp_path / "run", data)
    assert ap > chance + 0.3                                                     # 0.68 against 0.29 here


def _state(run_dir):
    s = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    losses = [{k: v for k, v in row.items() if k != "seconds"} for row in s["history"]["epochs"]]
    return s["model"], losses, s["assignments"], s["loss"]


def test_same_seed_same_run_and_resume_after_interruption(data, tmp_path, monkeypatch):
    args = ("--rounds", "2")
    short = ["train.epochs_per_round=2"]
    assert run_train(data, tmp_path / "a", *args, overrides=short) == 0
    assert run_train(data, tmp_path / "b", *args, overrides=short) == 0
    (ma, la, aa, ba), (mb, lb, ab, bb) = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert la == lb and aa == ab
    assert all(torch.equal(ma[k], mb[k]) for k in ma) and all(torch.equal(ba[k], bb[k]) for k in ba)

    def crash(self, r, e):
        if (r, e) == (1, 0):
            raise KeyboardInterrupt
    monkeypatch.setattr(train.Trainer, "after_epoch", crash)
    assert run_train(data, tmp_path / "c", *args, overrides=short) == 130   # Ctrl-C through clipae-train
    assert not torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=False)["complete"]
    monkeypatch.undo()
    assert run_train(data, tmp_path / "c", tiny=False) == 0              # no options: resumes the run
    mc, lc, ac, bc = _state(tmp_path / "c")
    assert lc == la and ac == aa and len(metrics(tmp_path / "c")) == 4
    assert all(torch.equal(ma[k], mc[k]) for k in ma) and all(torch.equal(ba[k], bc[k]) for k in ba)
    assert "resuming at round 1, epoch 1" in (tmp_path / "c" / "train.log").read_text()


def test_final_round_share_moves_epochs_to_the_last_round_with_the_total_unchanged(data, tmp_path, monkeypatch):
    for rounds, epochs, share in [(4, 10, 0.5), (4, 10, 0.7), (5, 60, 0.4), (3, 2, 0.9), (2, 1, 1.0)]:
        cfg = load_config(None, [f"train.epochs_per_round={epochs}", f"train.final_round_share={share}"])
        schedule = train.round_epochs(cfg.train, rounds)
        assert sum(schedule) == rounds * epochs and min(schedule) >= 1 and len(schedule) == rounds
        assert abs(schedule[-1] - share * rounds * epochs) <= rounds or schedule[:-1] == [1] * (rounds - 1)
    assert train.round_epochs(load_config(None, ["train.epochs_per_round=7"]).train, 3) == [5, 5, 11]   # default 0.5
    assert train.round_epochs(load_config(None, ["train.epochs_per_round=7", "train.final_round_share=null"]).train,
                              3) == [7, 7, 7]

    args, short = ("--rounds", "3"), ["train.epochs_per_round=2", "train.final_round_share=0.5"]
    assert run_train(data, tmp_path / "a", *args, overrides=short) == 0
    assert [int(r["round"]) for r in metrics(tmp_path / "a")] == [0, 0, 1, 2, 2, 2]     # 2 + 1 + 3 = 3 x 2
    with open(tmp_path / "a" / "rounds.csv") as f:
        assert [int(r["round"]) for r in csv.DictReader(f)] == [0, 1, 2]

    def crash(self, r, e):
        if (r, e) == (2, 0):
            raise KeyboardInterrupt
    monkeypatch.setattr(train.Trainer, "after_epoch", crash)
    assert run_train(data, tmp_path / "b", *args, overrides=short) == 130   # Ctrl-C through clipae-train
    monkeypatch.undo()
    assert run_train(data, tmp_path / "b", tiny=False) == 0
    (ma, la, aa, _), (mb, lb, ab, _) = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert la == lb and aa == ab and all(torch.equal(ma[k], mb[k]) for k in ma)


def test_a_run_from_before_the_schedule_resumes_with_equal_rounds(data, tmp_path, monkeypatch):
    def crash(self, r, e):
        if (r, e) == (0, 0):
            raise KeyboardInterrupt
    monkeypatch.setattr(train.Trainer, "after_epoch", crash)
    before = ["train.epochs_per_round=2", "train.final_round_share=null", "train.average_epochs=null"]
    assert run_train(data, tmp_path / "old", "--rounds", "3", overrides=before) == 130
    monkeypatch.undo()
    config = tmp_path / "old" / "config.yaml"
    values = yaml.safe_load(config.read_text())
    del values["train"]["final_round_share"]                   # as a run folder of an earlier version has it
    del values["train"]["average_epochs"]
    config.write_text(yaml.safe_dump(values, sort_keys=False))
    assert run_train(data, tmp_path / "old", tiny=False) == 0
    assert [int(r["round"]) for r in metrics(tmp_path / "old")] == [0, 0, 1, 1, 2, 2]   # not the default's 2 / 1 / 3
    assert run_train(data, tmp_path / "then", "--rounds", "3", overrides=before) == 0  # as that version trained
    (m_old, *_), (m_then, *_) = _state(tmp_path / "old"), _state(tmp_path / "then")
    assert all(torch.equal(m_old[k], m_then[k]) for k in m_then)                        # no averaging either


def test_collab_warm_up_keeps_its_share_of_a_round_the_schedule_lengthens(data, tmp_path):
    # 2 rounds x 2 epochs, 3/4 of the 4 epochs in the last round: [1, 3]; a warm-up of 1 epoch per
    # 2-epoch round is then 1 epoch of round 0 (0.5, rounded half up) and 2 of round 1 (1.5)
    over = ["train.epochs_per_round=2", "train.final_round_share=0.75", "loss.collab_warmup_epochs=1"]
    assert run_train(data, tmp_path / "a", "--rounds", "2", overrides=over) == 0
    collab = [(int(r["round"]), float(r["collab"]) > 0) for r in metrics(tmp_path / "a")]
    assert collab == [(0, False), (1, False), (1, False), (1, True)]
    assert run_train(data, tmp_path / "b", "--rounds", "2",
                     overrides=over + ["loss.collab_every_round=false"]) == 0   # one warm-up for the run
    assert [float(r["collab"]) > 0 for r in metrics(tmp_path / "b")] == [False, True, True, True]


def test_clear_errors_with_counts(data, tmp_path, capsys):
    recs = read_manifest(data["manifest"])
    no_audio = []
    for r in recs.values():
        r = json.loads(json.dumps(r))
        r["streams"].pop("vggish")
        no_audio.append(r)
    manifest = data["root"] / "manifest_no_vggish.jsonl"
    write_records(manifest, no_audio)
    assert run_train(data, tmp_path / "x", manifest=manifest) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"clipae-train: error: 24 of 24 videos have no 'vggish' stream in {manifest} (video_validation_0000001, "
                   "video_validation_0000002, video_validation_0000003, ...); the configuration needs it (streams "
                   "needed: i3d_rgb, i3d_flow, clip, vggish)")
    assert run_train(data, tmp_path / "y", "--no-caf", manifest=manifest, overrides=["train.epochs_per_round=1"]) == 0

    gt = json.loads(data["ground_truth"].read_text())
    gt["database"]["v_missing_one"] = {"subset": "validation", "duration": 9.0,
                                       "annotations": [{"segment": [1, 2], "label": "action_00"}]}
    gt_path = data["root"] / "gt_extra.json"
    gt_path.write_text(json.dumps(gt))
    assert run_train(data, tmp_path / "z", annotations=gt_path) == 2
    assert "1 of 25 videos of subset 'validation' are missing from" in capsys.readouterr().err

    assert run_train(data, tmp_path / "y", "--no-caf", "--no-ccp", manifest=manifest,
                     overrides=["train.epochs_per_round=1"]) == 2
    assert "holds a run with a different config (model.use_ccp)" in capsys.readouterr().err

    proc = subprocess.run([sys.executable, "-m", "clipae", "train", "--manifest", str(tmp_path / "none.jsonl"),
                           "--annotations", str(data["ground_truth"]), "--out", str(tmp_path / "w")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"clipae-train: error: {tmp_path / 'none.jsonl'}: no such manifest"]


@pytest.mark.parametrize("mode", ["unsupervised", "weakly"])
def test_non_finite_features_are_refused_naming_the_video(data, tmp_path, capsys, mode):
    import shutil
    root = tmp_path / "data"
    shutil.copytree(data["manifest"].parent, root)
    rec = read_manifest(root / data["manifest"].name)["video_validation_0000007"]
    path = root / rec["streams"]["i3d_flow"]["path"]
    a = np.load(path)
    a[3, 5] = np.nan if mode == "weakly" else np.inf
    np.save(path, a)
    assert run_train(data, tmp_path / "run", "--mode", mode, manifest=root / data["manifest"].name,
                     overrides=["train.epochs_per_round=1", "train.rounds=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"clipae-train: error: video_validation_0000007: non-finite values in i3d_flow ({path})")


def test_a_non_finite_loss_stops_training_with_one_line(data, tmp_path, capsys, monkeypatch):
    class NaNLoss(train.CLIPAELoss):
        def forward(self, *args, **kwargs):
            parts = super().forward(*args, **kwargs)
            return {**parts, "total": parts["total"] * float("nan")}

    monkeypatch.setattr(train, "CLIPAELoss", NaNLoss)
    out = tmp_path / "run"
    assert run_train(data, out, "--mode", "weakly", overrides=["train.epochs_per_round=2"]) == 2
    err = capsys.readouterr().err
    assert err == "clipae-train: error: round 0, epoch 0: the training loss became nan; lower train.lr or check the features\n"
    assert "training complete" not in (out / "train.log").read_text()
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert not state["complete"] and all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize("override,message", [("train.lr=-1", "train.lr must be greater than 0, not -1.0"),
                                              ("model.dropout=1.5", "model.dropout must be in [0, 1), not 1.5"),
                                              ("cluster.num_clusters=0", "cluster.num_clusters must be at least 2, not 0"),
                                              ("train.final_round_share=0", "train.final_round_share must be in (0, 1], not 0.0")])
def test_out_of_range_settings_are_one_line_errors(data, tmp_path, override, message):
    proc = subprocess.run([sys.executable, "-m", "clipae", "train", "--manifest", str(data["manifest"]),
                           "--annotations", str(data["ground_truth"]), "--out", str(tmp_path / "w"), "--set", override],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"clipae-train: error: {message}"]
    assert not (tmp_path / "w").exists()


def test_weight_average_is_an_exponential_moving_average_of_the_steps():
    model = torch.nn.Linear(2, 1)
    model.register_buffer("count", torch.tensor(0))
    avg = train.WeightAverage(epochs=2, steps_per_epoch=2)           # decay 1 - 1/4
    assert avg.decay == 0.75 and train.WeightAverage(None, 5).decay is None
    seen = []
    for step in range(3):
        with torch.no_grad():
            model.weight.fill_(float(step))
            model.count.fill_(step)
        seen.append(float(step))
        avg.update(model)
    expected = 0.75 * (0.75 * 0.0 + 0.25 * 1.0) + 0.25 * 2.0
    avg.apply(model)
    assert torch.allclose(model.weight, torch.full_like(model.weight, expected)) and int(model.count) == 2
    assert avg.state is None                                         # the next round averages afresh


def test_each_round_ends_with_the_averaged_weights_and_a_resumed_round_averages_the_same_steps(
        data, tmp_path, monkeypatch):
    over = ["train.epochs_per_round=2", "train.average_epochs=1"]
    steps: list[dict] = []
    update = train.WeightAverage.update

    def record(self, model):
        steps.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        update(self, model)
    monkeypatch.setattr(train.WeightAverage, "update", record)
    assert run_train(data, tmp_path / "a", "--rounds", "1", overrides=over) == 0
    monkeypatch.undo()
    decay = 1 - 1 / 6                                                # 24 videos, batches of 4: 6 steps an epoch
    expected = {k: v.clone() for k, v in steps[0].items()}
    for s in steps[1:]:
        for k, v in s.items():
            expected[k] = expected[k] * decay + v * (1 - decay) if v.dtype.is_floating_point else v
    saved, *_ = _state(tmp_path / "a")
    assert len(steps) == 12
    assert all(torch.allclose(saved[k], expected[k], atol=1e-6) for k in saved)
    learnt = [k for k, v in steps[0].items() if not torch.equal(v, steps[-1][k])]
    assert learnt and not all(torch.allclose(saved[k], steps[-1][k]) for k in learnt)   # not the last weights

    def crash(self, r, e):
        if (r, e) == (0, 0):
            raise KeyboardInterrupt
    monkeypatch.setattr(train.Trainer, "after_epoch", crash)
    assert run_train(data, tmp_path / "b", "--rounds", "1", overrides=over) == 130
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["average"] is not None   # mid-round
    monkeypatch.undo()
    assert run_train(data, tmp_path / "b", tiny=False) == 0
    resumed, *_ = _state(tmp_path / "b")
    assert all(torch.equal(saved[k], resumed[k]) for k in saved)
