"""Label-free cluster names (``clipae-train --class-names``): Hungarian on attention-pooled CLIP rows
against text embeddings; a synthetic text tower on synthetic data, then the command line."""
import json

import numpy as np
import pytest

from clipae.eval.mapping import NAMES_FILE, ClusterMapping, build_mapping
from clipae.eval.predict import cluster_mapping, default_mapping_method
from clipae.cli import eval_main, train_main
from clipae.eval.naming import name_clusters, name_run
from clipae.models.run import load_run
from clipae.models.synthetic import SyntheticSpec, SyntheticTextTower, class_names, generate
from clipae.datasets.annotations import canonical_id, load_ground_truth

TINY = ["data.num_segments=64", "model.hidden_dim=32", "model.attention_dim=16", "model.caf_dim=16",
        "model.ccp_dim=16", "model.dropout=0.3", "train.lr=1e-3", "train.batch_size=4", "train.threads=1",
        "train.epochs_per_round=8"]


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_names_follow_the_most_similar_text_one_to_one():
    rng = np.random.default_rng(0)
    text = unit(rng.normal(size=(3, 16)))
    truth = {0: 2, 1: 0, 2: 1, 3: 2}                     # cluster -> name index; cluster 3 shares name 2
    assignments, pooled = {}, {}
    for k, c in truth.items():
        for i in range(4):
            vid = f"v{k}_{i}"
            assignments[vid], pooled[vid] = k, unit(text[c] + 0.3 * rng.normal(size=16))
    mapping = name_clusters(assignments, pooled, 5, ["a", "b", "c"], text)   # cluster 4 is empty
    assert mapping.method == "clip-text"
    assert mapping.cluster_to_class[:3] == ["c", "a", "b"] and mapping.cluster_to_class[3] == "c"
    assert mapping.cluster_to_class[4] is None
    assert mapping.similarity.shape == (5, 3)
    back = ClusterMapping.from_json(json.loads(json.dumps(mapping.to_json())))
    assert back.cluster_to_class == mapping.cluster_to_class
    np.testing.assert_allclose(back.similarity, mapping.similarity, atol=1e-6)


SyntheticTower = SyntheticTextTower


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    spec = SyntheticSpec(train=24, test=12, classes=3, snippets=64,
                         dims={"i3d_rgb": 32, "i3d_flow": 32, "clip": 32, "vggish": 16}, seed=0)
    root = tmp_path_factory.mktemp("naming")
    data = generate(root / "data", spec)
    argv = ["--manifest", str(data["manifest"]), "--annotations", str(data["ground_truth"]), "--out",
            str(root / "run"), "--quiet", "--rounds", "2"]
    for o in TINY:
        argv += ["--set", o]
    assert train_main(argv) == 0
    return spec, data, root / "run"


def test_synthetic_names_agree_with_the_ground_truth_mapping(trained):
    spec, data, run_dir = trained
    names = list(reversed(class_names(spec.classes)))   # any order of the names
    mapping = name_run(run_dir, data["manifest"], names, SyntheticTower(spec))
    assert (run_dir / NAMES_FILE).is_file()
    run = load_run(run_dir, device="cpu")
    gt = load_ground_truth(data["ground_truth"])
    labels = gt.video_labels()
    reference = build_mapping(run.train_assignments, {v: labels[canonical_id(v, labels)] for v in run.train_assignments},
                              len(run.classes), list(gt.classes))
    assert mapping.agreement(reference) == 1.0
    # the saved names are what evaluation and localisation read when there is no ground truth
    assert default_mapping_method(run_dir, None) == "clip-text"
    assert cluster_mapping(run, run_dir, None, "clip-text").cluster_to_class == mapping.cluster_to_class


def test_eval_with_clip_text_names_reports_the_agreement(trained, capsys):
    spec, data, run_dir = trained
    name_run(run_dir, data["manifest"], class_names(spec.classes), SyntheticTower(spec))
    assert eval_main(["--run", str(run_dir), "--manifest", str(data["manifest"]), "--annotations",
                          str(data["ground_truth"]), "--mapping", "clip-text", "--quiet",
                          "-o", str(run_dir / "pred.json")]) == 0
    captured = capsys.readouterr()
    assert "clip-text names agree with the ground-truth Hungarian mapping on 3 of 3 clusters" in captured.err
    assert "mAP" in captured.out
    labels = {e["label"] for v in json.loads((run_dir / "pred.json").read_text())["results"].values() for e in v}
    assert labels <= set(class_names(spec.classes))


@pytest.mark.slow
def test_clipae_train_class_names_with_a_random_text_tower(tmp_path, capsys):
    spec = SyntheticSpec(train=8, test=4, classes=2, snippets=32,
                         dims={"i3d_rgb": 16, "i3d_flow": 16, "clip": 512, "vggish": 16}, seed=1)
    data = generate(tmp_path / "data", spec)
    (tmp_path / "names.txt").write_text("Juggling\nCooking\n")
    argv = ["--manifest", str(data["manifest"]), "--annotations", str(data["ground_truth"]), "--out",
            str(tmp_path / "run"), "--quiet", "--rounds", "1", "--class-names", str(tmp_path / "names.txt"),
            "--set", "train.epochs_per_round=1", *[x for o in TINY[:-1] for x in ("--set", o)]]
    assert train_main(argv) == 2            # the features are random: the text tower must be asked for as random
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--random-weights" in err
    assert train_main(argv + ["--random-weights"]) == 0
    out = capsys.readouterr().out
    assert "cluster names (clip-text" in out
    saved = json.loads((tmp_path / "run" / NAMES_FILE).read_text())
    assert sorted(saved["clusters"].values()) == ["Cooking", "Juggling"]
