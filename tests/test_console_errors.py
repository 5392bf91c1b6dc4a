"""Every console script of setup.cfg turns bad input into one line on stderr and an exit status,
never a traceback (a corrupt video and missing weights for clipae-localize included)."""
from __future__ import annotations

import configparser
import importlib
import json
import shutil
import traceback
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import toy_streams  # noqa: F401  (registers toy_colour)
from clipae.cli import train_main
from clipae.models import train
from clipae.models.synthetic import SyntheticSpec, generate

SETUP_CFG = Path(__file__).resolve().parent.parent / "setup.cfg"


def console_scripts() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG, encoding="utf-8")
    lines = [line.strip() for line in cfg["options.entry_points"]["console_scripts"].splitlines() if line.strip()]
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines)


def entry_point(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad inputs of every kind, and a small trained run (weakly, synthetic features)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    (root / "garbage.json").write_text("{not json")
    (root / "garbage.jsonl").write_text("junk\n")
    (root / "a_file").write_text("x")
    np_junk = root / "junk.npy"
    np_junk.write_bytes(b"\x93NUMPY junk")
    (root / "badrun").mkdir()
    (root / "badrun" / train.CHECKPOINT).write_bytes(b"not a checkpoint")
    spec = SyntheticSpec(train=6, test=2, classes=2, snippets=16,
                         dims={"i3d_rgb": 8, "i3d_flow": 8, "clip": 8, "vggish": 4}, seed=0)
    data = generate(root / "data", spec)
    argv = ["--manifest", str(data["manifest"]), "--annotations", str(data["ground_truth"]), "--out", str(root / "run"),
            "--quiet", "--mode", "weakly"]
    for o in ["data.num_segments=16", "model.hidden_dim=16", "model.attention_dim=8", "model.caf_dim=8",
              "model.ccp_dim=8", "train.batch_size=2", "train.threads=1", "train.epochs_per_round=1"]:
        argv += ["--set", o]
    assert train_main(argv) == 0
    # a run whose features came from the toy stream: clipae-localize gets as far as decoding the video
    toy = root / "toyrun"
    shutil.copytree(root / "run", toy)
    ex = json.loads((toy / "extraction.json").read_text())
    ex["streams"], ex["weights"] = {"toy_colour": {"dim": 4, "settings": {}, "options": {}}}, {"toy_colour": "toy"}
    (toy / "extraction.json").write_text(json.dumps(ex))
    # a run made with pretrained weights that are not on this machine
    pretrained = root / "pretrainedrun"
    shutil.copytree(root / "run", pretrained)
    ex = json.loads((pretrained / "extraction.json").read_text())
    ex["weights"] = {s: "sha256:0123" for s in ex["weights"]}
    (pretrained / "extraction.json").write_text(json.dumps(ex))
    return root, data


def bad_inputs(root: Path, data: dict) -> dict[str, list[list[str]]]:
    r = lambda name: str(root / name)  # noqa: E731
    toy = ["--stream-module", "toy_streams", "--streams", "toy_colour", "--quiet"]
    return {
        "clipae-extract": [
            [r("missing"), r("out")],
            [r("corrupt.mp4"), r("a_file/out"), *toy],
            [r("corrupt.mp4"), r("out"), *toy, "--fps", "-1"],
            [r("corrupt.mp4"), r("out"), *toy, "--stall-timeout", "0"],
            [r("corrupt.mp4"), r("out"), "--streams", "no_such_stream"],
            [r("corrupt.mp4"), r("out"), *toy, "--weights", "toy_colour"],
            [r("corrupt.mp4"), r("out"), "--stream-module", "no_such_module"],
            [r("corrupt.mp4"), r("out_corrupt"), *toy],             # the video fails, the run reports it
        ],
        "clipae-train": [
            ["--manifest", r("missing"), "--annotations", str(data["ground_truth"]), "--out", r("t1")],
            ["--manifest", r("garbage.jsonl"), "--annotations", str(data["ground_truth"]), "--out", r("t2")],
            ["--manifest", str(data["manifest"]), "--annotations", r("garbage.json"), "--out", r("t3")],
            ["--manifest", str(data["manifest"]), "--annotations", str(data["ground_truth"]), "--out", r("t4"),
             "--set", "no_such=1"],
            ["--manifest", str(data["manifest"]), "--annotations", str(data["ground_truth"]), "--out", r("a_file/t5")],
        ],
        "clipae-localize": [
            [r("corrupt.mp4")],                                          # no --run
            [r("missing.mp4"), "--run", r("run")],
            [r("corrupt.mp4"), "--run", r("missing_run")],
            [r("corrupt.mp4"), "--run", r("badrun")],
            [r("corrupt.mp4"), "--run", r("toyrun")],                    # a corrupt video
            [r("corrupt.mp4"), "--run", r("pretrainedrun"), "--weights-dir", r("no_weights")],  # missing weights
        ],
        "clipae-eval": [
            ["--predictions", r("missing"), "--annotations", str(data["ground_truth"])],
            ["--predictions", r("garbage.json"), "--annotations", str(data["ground_truth"])],
            ["--predictions", r("garbage.json")],
            ["--run", r("badrun")],
            ["--run", r("missing_run")],
        ],
        "clipae-bench": [
            ["no_such_benchmark"],
            ["extract", r("missing")],
        ],
        "clipae-convert-gt": [
            [r("missing"), "-o", r("gt.json")],
            [r("garbage.json"), "-o", r("gt.json")],
            [str(data["ground_truth"]), "-o", r("a_file/gt.json")],
        ],
        "clipae-compare-features": [
            [r("missing"), r("missing2")],
            [r("garbage.json"), r("junk.npy")],
            [r("a_file"), r("a_file")],
        ],
        "clipae-import-features": [
            ["wtalc", r("missing"), r("imp")],
            ["wtalc", r("junk.npy"), r("imp"), "--annotations", r("a_file")],
            ["rgb-flow", r("a_file"), r("imp")],
        ],
    }


#: what the localize cases of the issue must say (the video's own error, the weights' own error)
EXPECTED = {("clipae-localize", "toyrun"): "corrupt.mp4: cannot open",
            ("clipae-localize", "pretrainedrun"): "cannot download"}


def test_every_console_script_answers_bad_input_with_one_line(files, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network here")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root, data = files
    scripts = console_scripts()
    cases = bad_inputs(root, data)
    assert set(cases) == set(scripts), "every console script needs bad-input cases here"
    for script, target in scripts.items():
        main = entry_point(target)
        for argv in cases[script]:
            try:
                rc = main(argv)
            except SystemExit as e:  # argparse: usage and one error line
                rc = e.code
            except Exception:
                pytest.fail(f"{script} {' '.join(argv)} raised:\n{traceback.format_exc()}")
            out, err = capsys.readouterr()
            where = f"{script} {' '.join(argv)}: rc {rc}\nstdout: {out}\nstderr: {err}"
            assert isinstance(rc, int) and rc != 0, where
            assert "Traceback" not in err and "Traceback" not in out, where
            message = err.strip().splitlines() or out.strip().splitlines()
            assert message, where
            if rc == 2 and not err.startswith("usage:"):
                assert len(err.strip().splitlines()) == 1, where      # one line
            assert message[-1].startswith((script, "failed ", "usage:")) or " ok, " in out, where
            expected = EXPECTED.get((script, Path(argv[argv.index("--run") + 1]).name if "--run" in argv else ""))
            assert expected is None or expected in err, where
