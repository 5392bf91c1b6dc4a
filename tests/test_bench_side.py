"""clipae-bench side-by-side: A/B alternating whole-process runs, medians, ratios, timeouts, bad input."""
import json
import shlex
import subprocess
import sys

from clipae.bench.side import main, round_order

PY = shlex.quote(sys.executable)


def sleeper(seconds: float, mib: int, log=None) -> str:
    """A command that holds ``mib`` MiB for ``seconds`` (and appends its label to ``log``)."""
    mark = f"open({str(log[0])!r}, 'a').write({log[1]!r}); " if log else ""
    return f"{PY} -c \"import time; {mark}b = b'x' * ({mib} << 20); time.sleep({seconds})\""


def test_alternating_order_medians_and_ratios(tmp_path, capsys):
    log = tmp_path / "order.txt"
    assert main(["--ours", sleeper(0.2, 20, (log, "A")), "--theirs", sleeper(0.8, 150, (log, "B")),
                 "--runs", "3", "--timeout", "60", "--names", "clipae,vf", "--json", str(tmp_path / "s.json")]) == 0
    assert log.read_text() == "ABBAAB"
    summary = json.loads((tmp_path / "s.json").read_text())["summary"]
    wall, rss = summary["wall_s"], summary["peak_rss"]
    assert wall["vf"] >= 0.8 and 0.2 <= wall["clipae"] < wall["vf"]
    assert abs(wall["ratio"] - wall["clipae"] / wall["vf"]) < 1e-9 and wall["ratio"] < 0.9
    assert rss["vf"] > 150 * 2**20 and rss["ratio"] < 0.5 and len(rss["round_ratios"]) == 3
    out = capsys.readouterr().out
    assert out.count("round ") == 6 and "clipae / vf" in out
    assert "peak RSS MiB (largest process)" in out and "peak PSS MiB (all processes)" in out


def test_round_order_alternates():
    assert [round_order(i) for i in range(4)] == [(0, 1), (1, 0), (0, 1), (1, 0)]


def test_a_run_past_the_timeout_is_killed_and_reported_on_one_line(capsys):
    assert main(["--ours", sleeper(0, 1), "--theirs", sleeper(60, 1), "--runs", "2", "--timeout", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "theirs failed in round 1 (timed out" in err[0]


def test_a_failing_command_stops_the_comparison(capsys):
    assert main(["--ours", f"{PY} -c \"import sys; sys.exit('broken input')\"", "--theirs", sleeper(0, 1)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("clipae-bench side-by-side: error: ours failed in round 1 (exit 1): broken input")


def test_bad_input_is_one_line_without_traceback(tmp_path):
    for args, words in ((["--ours", "no-such-program-here", "--theirs", "true"], "cannot run a command"),
                        (["--ours", "'unclosed", "--theirs", "true"], "does not parse"),
                        (["--ours", "true", "--theirs", "true", "--runs", "0"], "--runs must be at least 1"),
                        (["--ours", "true", "--theirs", "true", "--theirs-cwd", str(tmp_path / "nope")],
                         "is not a folder"),
                        (["--ours", "true", "--theirs", "true", "--runs", "1", "--json", str(tmp_path / "no" / "s.json")],
                         "cannot write")):
        r = subprocess.run([sys.executable, "-m", "clipae", "bench", "side-by-side", *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr and "Traceback" not in r.stderr
