"""Zero-shot localisation: CLIP rows against text embeddings, through the proposal code, for one video
(``clipae-localize --zero-shot``) and a dataset (``clipae-eval --zero-shot``), with random towers."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import videogen
from clipae.cli import eval_main, localize_main
from clipae.eval.predict import PredictError
from clipae.eval.zero_shot import check_text_weights, localize_rows, read_class_names, zero_shot_outputs
from clipae.extractors.base import ExtractorOptions, get_stream
from clipae.extractors.clip_text import CLIPText, readable
from clipae.pipeline import manifest as mf
from clipae.pipeline.extract_cli import main as extract_main
from clipae.core.grid import SnippetGrid

DATA = Path(__file__).parent / "data" / "videos"
MODEL = "ViT-B-32"


@pytest.fixture(scope="module")
def tower():
    return CLIPText(MODEL, random_weights=True)


def test_readable_names():
    assert readable("BaseballPitch") == "baseball pitch"
    assert readable("Long_jump") == "long jump"
    assert readable("Playing violin") == "playing violin"


def test_text_rows_are_unit_deterministic_and_from_the_clip_streams_network(tower):
    text = tower.embed(["HighJump", "Diving"])
    assert text.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(CLIPText(MODEL, random_weights=True).embed(["HighJump", "Diving"]), text, rtol=1e-5)
    assert not np.allclose(text[0], text[1])
    image = get_stream("clip")(ExtractorOptions(random_weights=True, extra={"clip_model": MODEL}))
    theirs = tower.model.visual.state_dict()
    for name, p in image.visual.state_dict().items():     # one network: the image tower's weights are the same
        assert torch.equal(p, theirs[name]), name
    assert len(theirs) == len(image.visual.state_dict())
    assert tower.weights_id == image.weights_id == "random"


def test_planted_snippets_become_a_proposal_of_their_class(tower):
    names = ["HighJump", "Diving", "Billiards"]
    text = tower.embed(names)
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(30, 512)).astype(np.float32)
    rows[10:16] = text[1] + 0.05 * rng.normal(size=(6, 512))          # snippets 10..15 look like "Diving"
    scale = 100.0  # OpenAI's trained logit scale (a random tower's is 1/0.07)
    out = zero_shot_outputs(rows, text, scale)
    assert out["cas"].shape == (30, 3) and out["attention"].shape == (30,) and out["video_scores"].shape == (3,)
    assert (out["cas"][10:16].argmax(1) == 1).all()
    assert out["attention"][10:16].min() > 0.9 and np.delete(out["attention"], range(10, 16)).max() < 0.5
    grid = SnippetGrid()
    _, props = localize_rows(rows, text, scale, grid, 30 * 0.64)
    best = int(np.argmax(props.score))
    assert props.column[best] == 1
    truth = (grid.start_s(10), grid.end_s(15))
    inter = min(props.end[best], truth[1]) - max(props.start[best], truth[0])
    union = max(props.end[best], truth[1]) - min(props.start[best], truth[0])
    assert inter / union > 0.8, (props.start[best], props.end[best], truth)
    # kept crops (T, crops, 512) are averaged first
    kept = zero_shot_outputs(np.stack([rows, rows], axis=1), text, scale)
    np.testing.assert_allclose(kept["cas"], out["cas"], rtol=1e-5)


def test_the_text_tower_must_match_the_features():
    with pytest.raises(PredictError, match="--random-weights"):
        check_text_weights("random", False)
    with pytest.raises(PredictError, match="sha256:ab"):
        check_text_weights("sha256:ab", True)
    check_text_weights("random", True)


def test_class_names_from_a_list_or_a_ground_truth(tmp_path):
    (tmp_path / "n.txt").write_text("# classes\nHighJump\n\nDiving\n")
    assert read_class_names(tmp_path / "n.txt") == ["HighJump", "Diving"]
    assert len(read_class_names(Path(__file__).parent / "data" / "thumos14" / "bas_net_gt.json")) == 20
    (tmp_path / "twice.txt").write_text("a\na\n")
    with pytest.raises(PredictError, match="twice"):
        read_class_names(tmp_path / "twice.txt")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    for video in sorted(DATA.glob("*.mp4")):
        videogen.ffmpeg("-i", video, "-t", "1.5", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", d / video.name)
    (d / "names.txt").write_text("Juggling\nCooking\n")
    return d


def test_localize_zero_shot_on_a_sample_video(clips, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert localize_main([str(clips / "v_ZNVhz7ctTq0.mp4"), "--zero-shot", str(clips / "names.txt"),
                          "--random-weights", "--clip-model", MODEL, "--clip-frames", "1", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "RANDOM" in captured.err and "v_ZNVhz7ctTq0.mp4: 1.50 s, 3 snippets" in captured.out
    assert "latency:" in captured.out and "text tower" in captured.out
    entries = json.loads(out.read_text())["results"]["v_ZNVhz7ctTq0"]
    assert entries and {e["label"] for e in entries} <= {"Juggling", "Cooking"}
    assert all("cluster" not in e for e in entries)
    # no --random-weights and no checkpoint where it is looked for: one line, no traceback
    assert localize_main([str(clips / "v_ZNVhz7ctTq0.mp4"), "--zero-shot", str(clips / "names.txt"),
                          "--clip-model", MODEL, "--clip-weights", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such file" in err


def test_eval_zero_shot_scores_a_dataset(clips, tmp_path, capsys):
    features = tmp_path / "features"
    assert extract_main([str(clips), str(features), "--streams", "clip", "--clip-model", MODEL, "--clip-frames", "1",
                         "--random-weights", "--quiet", "--device", "cpu"]) == 0
    records = mf.read_manifest(features / mf.MANIFEST_NAME)
    gt = {"version": "VERSION 1.3", "database": {
        vid: {"subset": "validation", "duration": r["duration_s"],
              "annotations": [{"segment": [0.0, 1.0], "label": label}]}
        for (vid, r), label in zip(sorted(records.items()), ("Juggling", "Cooking"))}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    argv = ["--zero-shot", str(clips / "names.txt"), "--manifest", str(features / mf.MANIFEST_NAME),
            "--annotations", str(tmp_path / "gt.json"), "--quiet"]
    assert eval_main(argv + ["--random-weights"]) == 0
    out = capsys.readouterr().out
    assert "zero-shot proposals for 2 videos" in out and "mAP" in out
    predictions = json.loads((features / "zero_shot_validation.json").read_text())["results"]
    assert set(predictions) == set(records)
    assert eval_main(argv) == 2  # random clip features need the random text tower, said in one line
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--random-weights" in err
