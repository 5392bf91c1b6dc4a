"""Files users download or share run no code: run-folder checkpoints and W-TALC object arrays
with a payload that would create a marker file are refused with one line, the marker never appears."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_runs import DIMS, train_tiny
from clipae.cli import convert_gt_main, eval_main, import_features_main, train_main
from clipae.models import train
from clipae.models.run import load_run
from clipae.models.synthetic import SyntheticSpec
from clipae.datasets import annotations
from clipae.core.safe_npy import UnsafeFileError, load_npy

WTALC = Path(__file__).parent / "data" / "thumos14" / "wtalc_npy"
TINY = ["data.num_segments=16", "model.hidden_dim=16", "model.attention_dim=8", "model.caf_dim=8",
        "model.ccp_dim=8", "train.batch_size=4", "train.threads=1", "train.epochs_per_round=1"]


class Payload:
    """Unpickling this creates ``marker`` (a stand-in for any command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted_object_array(path: Path, marker: Path, first=b"video_validation_0000051") -> Path:
    array = np.empty(2, dtype=object)
    array[0], array[1] = first, Payload(marker)
    np.save(path, array, allow_pickle=True)
    return path


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------- the restricted unpickler

def test_object_arrays_of_arrays_strings_and_numbers_load(tmp_path):
    feats = np.empty(2, dtype=object)
    feats[0], feats[1] = np.arange(6, dtype=np.float32).reshape(3, 2), np.ones((1, 2))
    segments = np.empty(2, dtype=object)
    segments[0], segments[1] = [[1.0, 2.5]], [[np.float64(3.0), 4], [5, 6]]
    names = np.array([b"a", "b"], dtype=object)
    for value in (feats, segments, names):
        np.save(tmp_path / "x.npy", value, allow_pickle=True)
        got = load_npy(tmp_path / "x.npy", encoding="bytes")
        assert got.shape == value.shape and got.dtype == object
    assert np.array_equal(got, names)
    np.save(tmp_path / "plain.npy", np.arange(4.0))
    assert np.array_equal(load_npy(tmp_path / "plain.npy"), np.arange(4.0))


def test_restricted_unpickler_runs_nothing(tmp_path):
    marker = tmp_path / "MARKER"
    crafted_object_array(tmp_path / "evil.npy", marker)
    with pytest.raises(UnsafeFileError, match="system"):
        load_npy(tmp_path / "evil.npy")
    assert not marker.exists()


# --------------------------------------------------------------------------- W-TALC annotations

def crafted_wtalc_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the W-TALC annotation folder whose ``videoname.npy`` would create ``MARKER`` if unpickled."""
    folder, marker = tmp_path / "wtalc", tmp_path / "MARKER"
    shutil.copytree(WTALC, folder)
    crafted_object_array(folder / "videoname.npy", marker)
    return folder, marker


def test_crafted_wtalc_annotation_folder_is_refused(tmp_path, capsys):
    folder, marker = crafted_wtalc_folder(tmp_path)
    with pytest.raises(annotations.AnnotationError):
        annotations.load_ground_truth(folder)
    assert convert_gt_main([str(folder), "-o", str(tmp_path / "gt.json")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "videoname.npy" in line and "refused" in line
    assert not marker.exists()


# --------------------------------------------------------------------------- W-TALC features

def test_crafted_wtalc_feature_file_is_refused(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    feats = crafted_object_array(tmp_path / "features.npy", marker, first=np.zeros((3, 2048), np.float32))
    rc = import_features_main(["wtalc", str(feats), str(tmp_path / "out"), "--annotations", str(WTALC), "--quiet"])
    assert rc == 2
    line = one_line(capsys.readouterr().err)
    assert "features.npy" in line and "refused" in line
    assert not marker.exists()


def test_crafted_wtalc_index_for_the_features_is_refused(tmp_path, capsys):
    folder, marker = crafted_wtalc_folder(tmp_path)
    np.save(tmp_path / "features.npy", np.empty(0, dtype=object), allow_pickle=True)
    rc = import_features_main(["wtalc", str(tmp_path / "features.npy"), str(tmp_path / "out"),
                               "--annotations", str(folder), "--quiet"])
    assert rc == 2 and "refused" in one_line(capsys.readouterr().err)
    assert not marker.exists()


# --------------------------------------------------------------------------- run-folder checkpoints

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("safe_run")
    spec = SyntheticSpec(train=8, test=4, classes=2, snippets=16, dims=DIMS, seed=0)
    run, argv = train_tiny(root, spec, "--rounds", "1", settings=TINY)
    (root / "argv.txt").write_text("\n".join(argv))
    return run


def test_checkpoints_hold_only_what_weights_only_loads(run_dir):
    state = torch.load(run_dir / train.CHECKPOINT, map_location="cpu", weights_only=True)
    assert isinstance(state["centres"], torch.Tensor) and state["complete"]
    assert load_run(run_dir, device="cpu").classes


def test_checkpoint_with_numpy_centres_of_earlier_versions_still_loads(run_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    state = torch.load(old / train.CHECKPOINT, map_location="cpu", weights_only=True)
    state["centres"] = state["centres"].numpy()
    torch.save(state, old / train.CHECKPOINT)
    run = load_run(old, device="cpu")
    assert run.classes == load_run(run_dir, device="cpu").classes


def test_crafted_checkpoint_is_refused_by_eval_and_train(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    marker = tmp_path / "MARKER"
    state = torch.load(bad / train.CHECKPOINT, map_location="cpu", weights_only=True)
    state["history"] = Payload(marker)
    torch.save(state, bad / train.CHECKPOINT)
    with pytest.raises(train.RunError, match="refused"):
        load_run(bad, device="cpu")
    assert eval_main(["--run", str(bad)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "checkpoint.pt" in line and "refused" in line
    argv = (run_dir.parent / "argv.txt").read_text().splitlines()
    argv[argv.index("--out") + 1] = str(bad)
    assert train_main(argv) == 2                      # resuming reads the checkpoint too
    assert "refused" in one_line(capsys.readouterr().err)
    assert not marker.exists()


def test_compare_features_reads_wtalc_arrays_without_running_them(tmp_path, capsys):
    from clipae.datasets import compare_features
    marker = tmp_path / "ran"
    bad = crafted_object_array(tmp_path / "features.npy", marker)
    with pytest.raises(compare_features.CompareError, match="cannot read"):
        compare_features.load_object_array(bad)
    assert not marker.exists()
    ok = np.empty(2, dtype=object)
    ok[0], ok[1] = np.zeros((3, 4), np.float32), np.ones((2, 4), np.float32)
    np.save(tmp_path / "good.npy", ok, allow_pickle=True)
    loaded = compare_features.load_object_array(tmp_path / "good.npy")
    assert [a.shape for a in loaded] == [(3, 4), (2, 4)]
