"""clipae-bench gpu: the dry run of every step on the CPU, the wheel install, budgets, pins, bad input."""
import json
import subprocess
import sys
import zipfile

import pytest
import torch

from clipae.bench import gpu as bench_gpu
from clipae.bench.gpu import (FROM_SOURCE, GPU_WHEELS, ROOT, STEPS, TOTAL_BUDGET_S, Context,
                                       check_wheels_size, combined_real_time, download_command, gpu_test_files, main,
                                       pinned_versions, satisfied, source_wheel_command, step_install)
from clipae.bench.measure import run_measured


def make_wheel(folder, name="clipae_probe", version="0.1"):
    """A minimal pure-Python wheel holding the module ``name`` (PEP 427 layout)."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)
    return path


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dry_run_runs_every_step_on_the_cpu(tmp_path, capsys):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels)
    assert main(["--dry-run", "--wheels", str(wheels), "--json", str(tmp_path / "gpu.json")]) == 0
    report = json.loads((tmp_path / "gpu.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps) == [s.name for s in STEPS] and all(s["ok"] for s in steps.values())
    assert "installed clipae_probe 0.1" in steps["install"]["summary"]
    assert steps["gpu tests"]["numbers"].get("skipped", 0) >= 2  # the bf16 parity tests, skipped without CUDA
    streams = steps["streams"]["numbers"]
    assert {"i3d_rgb", "i3d_flow", "clip", "vggish"} <= set(streams)
    assert all(streams[s]["snippets_per_s"] > 0 and 0 < streams[s]["matmul_fraction"] < 1.5 for s in bench_gpu.STREAMS)
    assert streams["with_raft_x"] < streams["without_flow_x"]
    assert steps["extract"]["numbers"]["x_real_time"] > 0 and steps["extract"]["numbers"]["peak_rss_mib"] > 50
    assert steps["train"]["numbers"]["train_s"] > 0
    out = capsys.readouterr().out
    table = out[out.index("clipae-bench gpu --dry-run"):].splitlines()
    assert [line.split()[0] for line in table[2:]] == ["install", "gpu", "streams", "extract", "train", "total"]


def test_wheels_go_to_a_folder_on_the_childrens_path(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels)
    ctx = Context(dry=True, device="cpu", tmp=tmp_path, wheels=wheels)
    result = step_install(ctx, 120)
    assert result.numbers["installed"] == 1 and result.numbers["missing"] == []
    assert result.ok == bool(result.numbers["ffmpeg"])  # ok needs an ffmpeg executable too
    assert (tmp_path / "site" / "clipae_probe" / "__init__.py").exists()
    run = run_measured([sys.executable, "-c", "import clipae_probe; print(clipae_probe.VALUE)"], timeout=60, env=ctx.env)
    assert run.ok and run.last_line == "42"


def test_budgets_fit_eight_minutes():
    assert TOTAL_BUDGET_S == 8 * 60
    assert sum(s.budget_s for s in STEPS) <= TOTAL_BUDGET_S and all(s.budget_s > 0 for s in STEPS)


def test_gpu_tests_are_found():
    names = {p.name for p in gpu_test_files()}
    assert {"test_i3d.py", "test_clip.py"} <= names and "test_bench_gpu.py" not in names


def test_combined_real_time():
    assert combined_real_time([20.0, 20.0]) == pytest.approx(10.0)
    assert combined_real_time([200.0, 400.0, 400.0]) == pytest.approx(100.0)


def test_download_takes_the_exact_pins_of_constraints():
    pins = pinned_versions(list(GPU_WHEELS))
    lines = set((ROOT / "constraints.txt").read_text().split())
    assert set(pins) == set(GPU_WHEELS) and all(f"{n}=={v}" in lines for n, v in pins.items())
    cmd = download_command(ROOT / ".whl", pins)
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert [a for a in cmd if "==" in a] == [f"{n}=={v}" for n, v in pins.items()]
    cmd = source_wheel_command(ROOT / ".whl", {n: pins[n] for n in FROM_SOURCE})
    assert cmd[1:4] == ["-m", "pip", "wheel"] and "--no-binary=imageio-ffmpeg" in cmd
    assert [a for a in cmd if "==" in a] == [f"imageio-ffmpeg=={pins['imageio-ffmpeg']}"]


def test_test_wheels_come_with_their_dependencies():
    cmd = download_command(ROOT / ".whl", pinned_versions(["pytest", "pytest-timeout"]), deps=True)
    assert "--no-deps" not in cmd and "pytest==9.2.0" in cmd


def test_which_wheels_are_skipped(tmp_path):
    (tmp_path / "c.txt").write_text("decord==0.6.0\npytest==1.0\n")
    assert satisfied("decord", "0.6.0", tmp_path / "c.txt")          # installed at the pinned version
    assert not satisfied("pytest", "1.0", tmp_path / "c.txt")        # installed, but not at the pin
    assert satisfied("iniconfig", "0.1", tmp_path / "c.txt")         # an unpinned dependency, present
    assert not satisfied("clipae_probe", "0.1", tmp_path / "c.txt")  # not installed


def test_unpinned_package_is_an_error(tmp_path):
    (tmp_path / "c.txt").write_text("decord==0.6.0\n")
    with pytest.raises(ValueError, match="pins no version of av"):
        pinned_versions(["decord", "av"], tmp_path / "c.txt")


def test_wheel_folder_over_64_mib_is_refused(tmp_path, capsys):
    with open(tmp_path / "big-1.0-py3-none-any.whl", "wb") as f:
        f.truncate(65 << 20)
    assert check_wheels_size(tmp_path) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "65.0 MiB, over the 64 MiB" in err[0]
    (tmp_path / "big-1.0-py3-none-any.whl").unlink()
    make_wheel(tmp_path)
    assert check_wheels_size(tmp_path) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_without_cuda_the_real_check_says_so_in_one_line():
    r = subprocess.run([sys.executable, "-m", "clipae", "bench", "gpu"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "no CUDA device" in r.stderr and "--dry-run" in r.stderr


@pytest.mark.parametrize("dry", [False, True])
def test_the_real_and_dry_arguments_parse(tmp_path, dry):
    from clipae.bench.streams import build_parser
    from clipae.pipeline.extract_cli import parser_for

    ctx = Context(dry=dry, device="cuda", tmp=tmp_path, wheels=tmp_path)
    argv = bench_gpu.streams_argv(ctx, tmp_path / "s.json")
    parser, _ = build_parser()
    args = parser.parse_args(argv[1:])
    assert argv[0] == "streams" and args.streams.split(",") == list(bench_gpu.STREAMS)
    assert (args.frame_size, args.batch_size, args.snippet_length) == (
        ("228x128", 1, 8) if dry else ("455x256", 16, 16))
    argv = bench_gpu.extract_argv(ctx, tmp_path / "v.mp4", tmp_path / "out")
    parser, _ = parser_for(argv, "clipae-extract")
    args = parser.parse_args(argv)
    assert args.streams.split(",") == list(bench_gpu.STREAMS) and args.random_weights
    assert args.flow == ("raft_small" if dry else "raft_large")
