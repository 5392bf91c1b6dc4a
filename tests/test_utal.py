"""The unsupervised loop corrects itself, its diagnostics, and ``clipae-bench utal`` (baselines scored
by the real evaluator, determinism given a seed)."""
import csv
import json

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from clipae.cli import eval_main, train_main
from clipae.bench import utal as bench_utal
from clipae.models import clustering
from clipae.models.synthetic import SyntheticSpec, generate
from clipae.datasets.annotations import load_ground_truth

TINY = ["data.num_segments=64", "model.hidden_dim=32", "model.attention_dim=16", "model.caf_dim=16",
        "model.ccp_dim=16", "model.dropout=0.3", "train.lr=1e-3", "train.batch_size=8", "train.threads=1",
        "cluster.n_init=4", "loss.collab_warmup_epochs=3", "train.epochs_per_round=6"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """4 classes whose videos sit in strong scenes independent of the class: the round-0 clusters
    (mean-pooled features) follow the scenes and are wrong for most videos."""
    spec = SyntheticSpec(train=40, test=8, classes=4, snippets=64, instances=(2, 3), instance_len=(0.06, 0.15),
                         distractors=(1, 1), scene=1.0, scene_corr=0.0, no_audio=0.2,
                         dims={"i3d_rgb": 32, "i3d_flow": 32, "clip": 32, "vggish": 16}, seed=0)
    return generate(tmp_path_factory.mktemp("scenes"), spec)


def run(data, out, *args, overrides=()):
    argv = ["--manifest", str(data["manifest"]), "--annotations", str(data["ground_truth"]), "--out", str(out),
            "--quiet", *args]
    for o in [*TINY, *overrides]:
        argv += ["--set", o]
    return train_main(argv)


def rows(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def correct(labels, truth):
    """Per video: does its cluster map to its class under the best one-to-one mapping?"""
    counts = np.zeros((labels.max() + 1, truth.max() + 1), np.int64)
    np.add.at(counts, (labels, truth), 1)
    r, c = linear_sum_assignment(counts, maximize=True)
    mapping = dict(zip(r, c))
    return np.array([mapping.get(int(a), -1) == t for a, t in zip(labels, truth)])


def test_later_rounds_fix_the_round_zero_clusters(scenes, tmp_path):
    # round 0 from mean-pooled raw features, as TCAM: the scenes fool it, the later rounds must correct it
    assert run(scenes, tmp_path / "run", "--rounds", "4", "--plot", overrides=["cluster.first_embedding=mean"]) == 0
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    gt = load_ground_truth(scenes["ground_truth"])
    truth = np.array([gt.classes.index(gt.database[v]["annotations"][0]["label"]) for v in state["video_ids"]])
    first, last = (np.asarray(a) for a in (state["assignments"][0], state["assignments"][-1]))
    wrong0 = ~correct(first, truth)
    assert wrong0.mean() >= 0.4                       # the scenes fool round 0 for a known set of videos
    fixed = correct(last, truth)[wrong0]
    assert fixed.mean() >= 0.5                        # later rounds put at least half of them right
    table = rows(tmp_path / "run" / "rounds.csv")
    acc = [float(r["cluster_acc"]) for r in table]
    assert acc[-1] >= acc[0] + 0.3
    assert [r["changed"] for r in table][0] == "" and float(table[1]["changed"]) > 0.1
    assert all(0 <= float(r["agreement_nmi"]) <= 1 for r in table[1:])
    assert all(0 <= float(r["train_attention_ap"]) <= 1 for r in table)
    assert (tmp_path / "run" / "training.png").stat().st_size > 10_000
    log = (tmp_path / "run" / "train.log").read_text()
    assert "videos changed cluster" in log and "contrast embedding" in log
    assert "round 3 epoch 5: total " in log and " insdis " in log and " decor " in log


def test_contrast_embedding_ignores_what_is_constant_over_a_video():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(2, 10, 6)), dtype=torch.float32)
    att = torch.rand(2, 10)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    scene = torch.tensor(rng.normal(size=(2, 1, 6)) * 5, dtype=torch.float32)   # one scene per video
    a = clustering.contrast_pooling(x, mask, att)
    b = clustering.contrast_pooling(x + scene, mask, att)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(clustering.attention_pooling(x, mask, att), clustering.attention_pooling(x + scene, mask, att))
    # padding never counts
    y = x.clone()
    y[1, 7:] = 100.0
    torch.testing.assert_close(clustering.contrast_pooling(y, mask, att), a)


def test_validation_split_early_stop_and_the_config_checks(scenes, tmp_path):
    out = tmp_path / "run"
    assert run(scenes, out, "--rounds", "4", overrides=["data.val_fraction=0.25", "cluster.stop_below=1.0"]) == 0
    held = json.loads((out / "validation.json").read_text())["video_ids"]
    assigned = json.loads((out / "assignments.json").read_text())["assignments"]
    assert len(held) == 10 and not set(held) & set(assigned) and len(assigned) == 30
    table = rows(out / "rounds.csv")
    # stop_below=1.0: round 1 always moves less than everything, so the run ends after round 0
    assert [r["round"] for r in table] == ["0"]
    assert {"val_attention_ap", "val_acc", "train_attention_ap"} <= set(table[0])
    assert 0 <= float(table[0]["val_acc"]) <= 1
    assert json.loads((out / "assignments.json").read_text())["round"] == 0
    assert "stopping after round 0" in (out / "train.log").read_text()
    for bad in ("cluster.embedding=nope", "cluster.stop_below=2", "data.val_fraction=1.0",
                "cluster.first_embedding=nope"):
        assert run(scenes, tmp_path / bad, overrides=[bad]) == 2


@pytest.mark.parametrize("first, flags, ran, margin", [(None, [], "split", 0.3), ("actionness", [], "actionness", 0.3),
                                                       (None, ["--no-ccp"], "actionness", 0.1)])   # None: auto
def test_label_free_first_rounds_see_through_the_scenes(scenes, tmp_path, first, flags, ran, margin):
    out = tmp_path / "run"
    chosen = [f"cluster.first_embedding={first}"] if first else []
    assert run(scenes, out, "--rounds", "1", *flags, overrides=["train.epochs_per_round=1", *chosen]) == 0
    assert f"contrast embedding of label-free {ran}" in (out / "train.log").read_text()
    mean = tmp_path / "mean"
    assert run(scenes, mean, "--rounds", "1", *flags,
               overrides=["train.epochs_per_round=1", "cluster.first_embedding=mean"]) == 0
    acc = float(rows(out / "rounds.csv")[0]["cluster_acc"])
    assert acc >= float(rows(mean / "rounds.csv")[0]["cluster_acc"]) + margin   # CBP alone: 0.55 against 0.40


def test_baselines_are_scored_by_the_real_evaluator(scenes, tmp_path):
    gt = load_ground_truth(scenes["ground_truth"])
    train_ids, test_ids = sorted(gt.subset("validation").database), sorted(gt.subset("test").database)
    results, acc = bench_utal.baseline_results(scenes, 0, ["i3d_rgb", "i3d_flow"], train_ids, test_ids)
    assert set(results) == set(bench_utal.BASELINES) and 0 <= acc <= 1
    for name, res in results.items():
        ours = bench_utal.map_scores(gt, "test", res)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"version": "", "results": res, "external_data": {}}))
        assert eval_main(["--predictions", str(path), "--annotations", str(scenes["ground_truth"]),
                              "--subset", "test", "--tiou", "0.1:0.7:0.1", "--json", str(tmp_path / f"{name}.out")]) == 0
        theirs = json.loads((tmp_path / f"{name}.out").read_text())["mAP"]
        np.testing.assert_allclose(ours, theirs, atol=1e-12)
        assert ours.max() > 0


def test_bench_is_deterministic_given_a_seed(tmp_path, capsys):
    outs = []
    for i in range(2):
        assert bench_utal.main(["--size", "smoke", "--variants", "clip-ae,weakly", "--seeds", "3",
                                "--json", str(tmp_path / f"{i}.json"), "--workdir", str(tmp_path / f"w{i}")]) == 0
        table = json.loads((tmp_path / f"{i}.json").read_text())
        for cells in table.values():
            for c in cells.values():
                c.pop("seconds")
        outs.append(table)
    assert outs[0] == outs[1]
    cells = outs[0]["base"]
    assert set(cells) == {"clip-ae", "weakly", "kmeans+norm", "oracle+norm"}
    assert len(cells["clip-ae"]["acc_rounds"][0]) == bench_utal.SIZES["smoke"].rounds
    assert len(cells["clip-ae"]["names"]) == 1 and 0 <= cells["clip-ae"]["names"][0] <= 1
    assert cells["weakly"]["names"] == []
    printed = capsys.readouterr().out
    assert "family base" in printed and "% of weakly" in printed and "oracle+norm" in printed
    # the weakly upper bound trains as many epochs in one round as the unsupervised run in all of them
    argv = bench_utal.train_argv("weakly", bench_utal.SIZES["smoke"], {"manifest": "m", "ground_truth": "g"},
                                 tmp_path, 0, "test")
    size = bench_utal.SIZES["smoke"]
    assert argv[argv.index("--rounds") + 1] == "1"
    assert f"train.epochs_per_round={size.rounds * size.epochs}" in argv


def test_table_and_summary_over_several_seeds(capsys):
    runs = {"clip-ae": bench_utal.Cell([[0.8] * 7, [0.6] * 7], [[0.5, 0.9], [0.6, 0.8]], [0.7, 0.9], [1.0, 0.5],
                                       seconds=[1.0, 2.0]),
            "weakly": bench_utal.Cell([[0.9] * 7, [0.7] * 7], seconds=[1.0, 1.0]),
            "kmeans+norm": bench_utal.Cell([[0.1] * 7, [0.3] * 7], [[0.4], [0.4]], seconds=[0.0, 0.0])}
    bench_utal.print_table("base", runs, [0, 1], "test")
    out = capsys.readouterr().out
    assert "70.0±10.0" in out and "0.550±0.050" in out and "0.850±0.050" in out and "0.75±0.25" in out
    assert "cluster accuracy per round (mean over seeds): clip-ae 0.550 → 0.850" in out
    lines = bench_utal.summary({"base": runs})
    assert lines[0] == "clip-ae cluster accuracy, last round minus round 0, over families with round 0 < 0.9 (base): +0.300"
    assert "clip-ae 70.0, 88% of weakly 80.0, > kmeans+norm 20.0" in lines[1]
    # the full model with another round 0 gets its own line (a round 0 at 0.9 or above has none)
    runs["clip-ae-mean0"] = bench_utal.Cell([[0.7] * 7, [0.7] * 7], [[0.3, 0.9], [0.5, 1.0]], seconds=[1.0, 1.0])
    runs["clip-ae"].acc_rounds = [[0.95, 1.0], [0.97, 1.0]]
    lines = bench_utal.summary({"base": runs})
    assert lines[0] == "clip-ae-mean0 cluster accuracy, last round minus round 0, over families with round 0 < 0.9 (base): +0.550"
    assert "clip-ae-mean0 70.0" in lines[1]


def test_bench_refuses_unknown_names(capsys):
    assert bench_utal.main(["--families", "nope"]) == 2
    assert "unknown family or variant: nope" in capsys.readouterr().err


def test_auto_first_round_splits_the_vlp_view_and_needs_one():
    assert clustering.first_round_name("auto", [["i3d_rgb", "i3d_flow"], ["clip"]]) == "split"
    assert clustering.first_round_name("auto", [["i3d_rgb", "i3d_flow"]]) == "actionness"
    assert clustering.first_round_name("split", [["i3d_rgb", "i3d_flow"]]) == "split"   # asked for: CBP split


def test_sign_invariant_kmeans_clusters_lines_not_points():
    rng = np.random.default_rng(0)
    axes = np.linalg.qr(rng.normal(size=(12, 3)))[0].T                  # 3 orthonormal class axes
    truth = np.repeat(np.arange(3), 10)
    signs = rng.choice([-1.0, 1.0], size=30)                            # each video's arbitrary sign
    e = signs[:, None] * axes[truth] + 0.15 * rng.normal(size=(30, 12))
    labels, aligned = clustering.sign_invariant_kmeans(e, 3, seed=0, n_init=4)
    assert clustering.cluster_accuracy(labels, truth) == 1.0
    assert clustering.cluster_accuracy(clustering.cluster(e, 3, "kmeans", 0, 4)[0], truth) < 0.9
    # every member now points the same way along its cluster's axis; only signs changed
    for c in range(3):
        members = aligned[labels == c]
        assert (members @ members.mean(0) > 0).all()
    np.testing.assert_allclose(np.abs(aligned), np.abs(e))
    again = clustering.sign_invariant_kmeans(e, 3, seed=0, n_init=4)[0]
    np.testing.assert_array_equal(labels, again)
    with pytest.raises(ValueError, match="cannot form 3 clusters"):
        clustering.sign_invariant_kmeans(e[:2], 3, seed=0, n_init=1)


def test_split_actionness_separates_an_action_that_covers_half_the_video():
    rng = np.random.default_rng(1)
    t, d = 40, 8
    x = torch.tensor(rng.normal(size=(2, t, d)) * 0.3, dtype=torch.float32)
    fg = torch.zeros(2, t)
    fg[0, 5:27] = 1                                   # 55 % of video 0
    fg[1, 10:18] = 1                                  # 8 of video 1's 30 valid snippets
    x += fg[..., None] * 2.0
    mask = torch.ones(2, t, dtype=torch.bool)
    mask[1, 30:] = False
    batch = {"s": x, "mask": mask}
    ident = lambda s, v: v  # noqa: E731
    split = clustering.split_actionness(batch, ["s"], ident, smooth=1)
    assert split[1, 30:].abs().sum() == 0             # padding never counts
    for j, n in ((0, t), (1, 30)):
        agree = (split[j, :n] == fg[j, :n]).float().mean()
        assert max(agree, 1 - agree) == 1.0           # the two halves, whichever side is which
    # the distance from the video's mean cannot tell the sides of video 0 apart
    dist = clustering.distance_actionness(batch, ["s"], ident)[0]
    assert abs(float(dist[fg[0] == 1].mean() - dist[fg[0] == 0].mean())) < 0.15
    with pytest.raises(KeyError):
        clustering.split_actionness({"s": x, "mask": mask}, ["missing"], ident)


@pytest.fixture(scope="module")
def long_actions(tmp_path_factory):
    """3 classes, one action per video covering 30-50 % of it: the video's mean sits between action
    and background, so a snippet's distance from it says little."""
    spec = SyntheticSpec(train=36, test=6, classes=3, snippets=60, instances=(1, 1), instance_len=(0.3, 0.5),
                         distractors=(1, 1), scene=0.6, scene_corr=0.5, no_audio=0.2,
                         dims={"i3d_rgb": 32, "i3d_flow": 32, "clip": 32, "vggish": 16}, seed=3)
    return generate(tmp_path_factory.mktemp("long"), spec)


def test_split_first_round_finds_long_actions_and_its_smoothing_reaches_the_code(long_actions, tmp_path, monkeypatch):
    seen = []
    real = clustering.FIRST_ROUND["split"]

    def spy(batch, streams, norm, **options):
        seen.append((tuple(streams), options))
        return real.actionness(batch, streams, norm, **options)

    monkeypatch.setitem(clustering.FIRST_ROUND, "split",
                        clustering.FirstRound(spy, real.view, real.signed, real.options))
    acc = {}
    for first in ("split", "actionness"):
        out = tmp_path / first
        assert run(long_actions, out, "--rounds", "1", overrides=["train.epochs_per_round=1",
                                                                  f"cluster.first_embedding={first}",
                                                                  "cluster.smooth=3"]) == 0
        acc[first] = float(rows(out / "rounds.csv")[0]["cluster_acc"])
    assert "label-free split, sign-invariant k-means" in (tmp_path / "split" / "train.log").read_text()
    assert seen and all(s == (("clip",), {"smooth": 3}) for s in seen)   # the VLP view, the configured width
    assert acc["split"] >= 0.9 and acc["split"] >= acc["actionness"] + 0.2
    assert run(long_actions, tmp_path / "bad", overrides=["cluster.smooth=0"]) == 2
