"""The one wrapper every console script runs through (``clipae.cli.run``): one line on stderr and the
exit status of what went wrong; an unexpected error's traceback goes to a log file, not the terminal."""
from __future__ import annotations

import subprocess
import sys

import pytest

from clipae import cli
from clipae.core.errors import BadInput, ClipaeError, WorkFailed
from clipae.datasets.annotations import AnnotationError
from clipae.models.config import ConfigError


def raising(exc: BaseException):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize("exc,status", [
    (BadInput("no such file x.json"), 2),
    (ConfigError("train.lr must be greater than 0, not -1"), 2),
    (WorkFailed("the download stopped"), 1),
    (OSError(28, "No space left on device", "out/a.npy"), 2),
    (KeyboardInterrupt(), 130),
])
def test_each_failure_is_one_line_and_its_status(exc, status, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "LOG_DIR", tmp_path / "logs")
    assert cli.run("eval", [], main=raising(exc)) == status
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("clipae-eval: ") and "Traceback" not in err
    assert not (tmp_path / "logs").exists()            # expected failures leave no log


def test_a_bug_is_one_line_and_its_traceback_goes_to_a_log_file(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "LOG_DIR", tmp_path / "logs")

    def buggy(argv):
        return {}["missing key"]

    assert cli.run("train", ["--x"], main=buggy) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError" in err and "Traceback" not in err
    [log] = (tmp_path / "logs").iterdir()
    assert log.name.startswith("clipae-train-") and str(log) in err
    text = log.read_text()
    assert "Traceback" in text and "buggy" in text


def test_every_error_class_derives_from_the_base():
    assert issubclass(AnnotationError, BadInput) and issubclass(AnnotationError, ValueError)
    assert issubclass(WorkFailed, ClipaeError) and WorkFailed.exit_status == 1 and BadInput.exit_status == 2


def test_python_dash_m_clipae_runs_the_commands():
    r = subprocess.run([sys.executable, "-m", "clipae", "eval", "--predictions", "missing.json", "--annotations", "x"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("clipae-eval: error: ")
    r = subprocess.run([sys.executable, "-m", "clipae", "no-such-command"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("usage: python -m clipae")
