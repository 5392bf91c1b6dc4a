"""``clipae-bench gpu``: the one-shot check of a freshly lent GPU machine, one table at the end.

    clipae-bench gpu [--wheels DIR] [--json PATH]     # on the GPU machine (``make gpu-check``)
    clipae-bench gpu --dry-run                        # the same steps on the CPU, tiny, in seconds
    clipae-bench gpu --download-wheels                # fill .whl/ with the pinned wheels (``make gpu-wheels``)

Steps, each in child processes under its own time budget (the budgets add up to 8 minutes):

1. ``install``: the wheels found in ``--wheels`` (default ``.whl/`` of the repository, git-ignored)
   whose distribution is not already installed (at the version constraints.txt pins) go through
   ``pip install --no-deps --no-index --target`` into a temporary folder put on the children's
   ``PYTHONPATH`` (the machine's own environment is left as it is); then reports which of
   open_clip, decord, ffmpeg-python and imageio-ffmpeg the children still cannot import and
   which ffmpeg executable they use (``.whl/`` holds imageio-ffmpeg without its bundled ffmpeg,
   see ``FROM_SOURCE``);
2. ``gpu tests``: ``pytest -m gpu`` on the test files that hold such tests (bf16 against fp32 of
   I3D and CLIP; skipped without CUDA);
3. ``streams``: ``clipae-bench streams`` on THUMOS-sized frames (320×180 video, short side 256
   → 455×256, 25 fps, 16-frame snippets) for i3d_rgb, i3d_flow (RAFT), clip and vggish, and the
   combined × real time of the four streams (with RAFT) and of the three without flow;
4. ``extract``: ``clipae-extract`` with the four streams (random weights) on a generated
   2-minute 320×180, 25 fps video with audio: × real time and peak RSS;
5. ``train``: one short ``clipae-bench train`` (reduced model, one round).

``--dry-run`` runs the same steps on the CPU at a tiny size (random weights, 8-frame snippets,
64×64 I3D input in ``streams``, a 0.64 s video, RAFT small with one update, a few synthetic
videos). The exit status is 0 only when every step passed.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .extract import exit_text, make_long_video
from .measure import ChildRun, MiB, run_measured

PROG = "clipae-bench gpu"
#: the repository (the ``clipae`` package's folder) and its git-ignored wheel folder
ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"
#: what a GPU image with torch usually lacks: distribution name → module the children import
GPU_WHEELS = {"open_clip_torch": "open_clip", "decord": "decord", "ffmpeg-python": "ffmpeg",
              "imageio-ffmpeg": "imageio_ffmpeg"}
#: what ``pytest -m gpu`` needs; downloaded with their dependencies (iniconfig, pluggy, ...), which
#: constraints.txt does not pin
TEST_WHEELS = ("pytest", "pytest-timeout")
#: built from the pinned source release instead of downloaded: its binary wheel bundles an ffmpeg
#: executable and alone weighs 64.8 MiB (imageio_ffmpeg-0.8.1-py3-none-manylinux_2_28_x86_64.whl);
#: without it, imageio_ffmpeg uses the ``ffmpeg`` on PATH or ``IMAGEIO_FFMPEG_EXE``
FROM_SOURCE = ("imageio-ffmpeg",)
#: the carried wheel folder must stay under this (what travels with the working tree)
WHEELS_LIMIT = 64 * MiB
STREAMS = ("i3d_rgb", "i3d_flow", "clip", "vggish")
TOTAL_BUDGET_S = 8 * 60


@dataclass
class Context:
    """What every step shares: where to run, how big, and the children's environment."""

    dry: bool
    device: str
    tmp: Path
    wheels: Path
    python: str = sys.executable
    env: dict = field(default_factory=lambda: dict(os.environ))
    deadline: float = float("inf")  # time.monotonic() by which the whole check must end

    def run(self, cmd: list[str], budget: float, cwd: Path | None = None) -> ChildRun:
        """``cmd`` under the smaller of ``budget`` and the time left of the whole check."""
        timeout = max(1.0, min(budget, self.deadline - time.monotonic()))
        return run_measured(cmd, timeout=timeout, cwd=str(cwd or ROOT), env=self.env)

    def bench(self, *argv: str) -> list[str]:
        return [self.python, "-m", "clipae", "bench", *argv]


@dataclass
class Result:
    ok: bool
    summary: str
    numbers: dict = field(default_factory=dict)


def failed(what: str, run: ChildRun) -> Result:
    """A failed child: its exit (or timeout) and the last line it wrote."""
    return Result(False, f"{what}: {exit_text(run)}: {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.last_line}")


def import_root() -> Path | None:
    """The folder that makes ``import clipae`` find this package (``…/X`` holding ``X/clipae``)."""
    parent = ROOT.parent
    return parent if (parent / "clipae").exists() else None


def prepend_path(env: dict, folder: Path) -> None:
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [env.get("PYTHONPATH")])])


# --- 1. install ---------------------------------------------------------------------------------

def wheel_name_version(path: Path) -> tuple[str, str]:
    """``open_clip_torch-3.3.0-py3-none-any.whl`` → ``("open_clip_torch", "3.3.0")`` (PEP 427)."""
    parts = path.name.split("-")
    if len(parts) < 5 or not path.name.endswith(".whl"):
        raise ValueError(f"{path.name} is not a wheel file name")
    return parts[0], parts[1]


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def satisfied(name: str, version: str, constraints: Path = ROOT / "constraints.txt") -> bool:
    """Whether the wheel ``name``-``version`` can be skipped: its distribution is installed at the
    version constraints.txt pins (at ``version`` if not pinned there), or at any version when it is
    an unpinned dependency (pytest's)."""
    have = installed_version(name)
    if have is None:
        return False
    try:
        return have == pinned_versions([name], constraints)[name]
    except ValueError:  # not pinned: a dependency of the test wheels, any version does
        return True


def step_install(ctx: Context, budget: float) -> Result:
    wheels = sorted(ctx.wheels.glob("*.whl")) if ctx.wheels.is_dir() else []
    needed = [w for w in wheels if not satisfied(*wheel_name_version(w))]
    parts = [f"{len(wheels)} wheels in {ctx.wheels}" if wheels else f"no wheels in {ctx.wheels}"]
    if needed:
        site = ctx.tmp / "site"
        run = ctx.run([ctx.python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                       "--disable-pip-version-check", "--target", str(site), *map(str, needed)], budget)
        if not run.ok:
            return failed("pip install", run)
        prepend_path(ctx.env, site)
        parts.append("installed " + ", ".join("{} {}".format(*wheel_name_version(w)) for w in needed))
    run = ctx.run([ctx.python, "-c", PROBE, *GPU_WHEELS.values()], budget)
    if not run.ok:
        return failed("import check", run)
    probe = json.loads(run.last_line)
    missing, ffmpeg = probe["missing"], probe["ffmpeg"]
    parts.append(f"cannot import: {', '.join(missing)}" if missing else "all of " + ", ".join(GPU_WHEELS) + " import")
    parts.append(f"ffmpeg {ffmpeg}" if ffmpeg else "no ffmpeg executable (put one on PATH or set IMAGEIO_FFMPEG_EXE)")
    # decord is optional (PyAV decodes without it); the others and ffmpeg are needed by the streams and audio
    return Result(not set(missing) - {"decord"} and bool(ffmpeg), "; ".join(parts),
                  {"missing": missing, "installed": len(needed), "ffmpeg": ffmpeg})


#: run in a child with the children's environment: ``{"missing": [modules], "ffmpeg": path or None}``
PROBE = """
import importlib.util, json, sys
missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
try:
    import imageio_ffmpeg
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
except Exception:
    ffmpeg = None
print(json.dumps({"missing": missing, "ffmpeg": ffmpeg}))
"""


# --- 2. CUDA-only tests -------------------------------------------------------------------------

def gpu_test_files(tests: Path = ROOT / "tests") -> list[Path]:
    """The test files that hold ``@pytest.mark.gpu`` tests."""
    return sorted(p for p in tests.glob("test_*.py") if "pytest.mark.gpu" in p.read_text(encoding="utf-8"))


def step_gpu_tests(ctx: Context, budget: float) -> Result:
    files = gpu_test_files()
    if not files:
        return Result(False, "no test file holds a pytest.mark.gpu test")
    run = ctx.run([ctx.python, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
                   *map(str, files)], budget)
    counts = dict((k, int(v)) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", run.stdout))
    summary = ", ".join(f"{v} {k}" for k, v in counts.items()) or run.last_line
    if run.timed_out or run.status != 0:
        return Result(False, f"pytest -m gpu ({exit_text(run)}): {summary}", counts)
    return Result(True, f"pytest -m gpu on {len(files)} files: {summary}", counts)


# --- 3. per-stream throughput ---------------------------------------------------------------------

def combined_real_time(x_real_time: list[float]) -> float:
    """× real time of streams run one after the other on the same snippets: ``1 / Σ 1/x``."""
    return 1.0 / sum(1.0 / x for x in x_real_time)


def streams_argv(ctx: Context, json_path: Path) -> list[str]:
    argv = ["streams", "--streams", ",".join(STREAMS), "--device", ctx.device, "--fps", "25",
            "--json", str(json_path)]
    if ctx.dry:
        return argv + ["--in-process", "--batch-size", "1", "--batches", "1", "--snippet-length", "8",
                       "--snippet-stride", "8", "--frame-size", "228x128", "--crop", "64", "--flow", "raft_small",
                       "--raft-iters", "1", "--clip-model", "ViT-B-32", "--clip-frames", "1"]
    return argv + ["--batch-size", "16", "--batches", "3", "--frame-size", "455x256"]


def step_streams(ctx: Context, budget: float) -> Result:
    out = ctx.tmp / "streams.json"
    run = ctx.run(ctx.bench(*streams_argv(ctx, out)), budget)
    if not run.ok:
        return failed("clipae-bench streams", run)
    rows = {r["stream"]: r for r in json.loads(out.read_text(encoding="utf-8"))}
    numbers = {name: {"snippets_per_s": r["snippets_per_s"], "x_real_time": r["x_real_time"],
                      "peak_mib": r["peak_bytes"] / MiB, "matmul_fraction": r["matmul_fraction"]}
               for name, r in rows.items()}
    numbers["with_raft_x"] = combined_real_time([rows[s]["x_real_time"] for s in STREAMS])
    numbers["without_flow_x"] = combined_real_time([rows[s]["x_real_time"] for s in STREAMS if s != "i3d_flow"])
    per = ", ".join(f"{n} {r['x_real_time']:.1f}x ({r['matmul_fraction']:.0%} of matmul)" for n, r in rows.items())
    return Result(True, f"{per}; four streams with RAFT {numbers['with_raft_x']:.1f}x real time, "
                        f"without flow {numbers['without_flow_x']:.1f}x", numbers)


# --- 4. four-stream extraction ----------------------------------------------------------------------

def extract_argv(ctx: Context, video: Path, out: Path) -> list[str]:
    """``clipae-extract`` arguments: the four streams, random weights (tiny settings when dry)."""
    argv = [str(video), str(out), "--quiet", "--streams", ",".join(STREAMS), "--random-weights", "--device", ctx.device]
    if ctx.dry:
        argv += ["--snippet-length", "8", "--snippet-stride", "8", "--batch-size", "2", "--flow", "raft_small",
                 "--raft-iters", "1", "--clip-model", "ViT-B-32", "--clip-frames", "1", "--decode-workers", "0"]
    return argv


def step_extract(ctx: Context, budget: float) -> Result:
    start = time.monotonic()
    seconds = 0.64 if ctx.dry else 120.0
    video = ctx.tmp / "generated.mp4"
    make_long_video(video, seconds / 60, size="320x180", fps=25, timeout=budget)
    cmd = [ctx.python, "-m", "clipae", "extract", *extract_argv(ctx, video, ctx.tmp / "features")]
    run = ctx.run(cmd, budget - (time.monotonic() - start))
    if not run.ok:
        return failed("clipae-extract", run)
    numbers = {"video_s": seconds, "wall_s": run.wall_s, "x_real_time": seconds / run.wall_s,
               "peak_rss_mib": run.peak_rss / MiB, "tree_rss_mib": run.tree_rss / MiB}
    return Result(True, f"{seconds:g} s video in {run.wall_s:.1f} s = {numbers['x_real_time']:.1f}x real time, "
                        f"peak RSS {numbers['peak_rss_mib']:.0f} MiB; {run.last_line}", numbers)


# --- 5. training ------------------------------------------------------------------------------------

def step_train(ctx: Context, budget: float) -> Result:
    size = (["--videos", "24", "--snippets", "30", "--epochs", "1"] if ctx.dry
            else ["--videos", "200", "--snippets", "750", "--epochs", "3"])
    run = ctx.run(ctx.bench("train", "--size", "reduced", "--rounds", "1", "--device", ctx.device, *size), budget)
    if not run.ok:
        return failed("clipae-bench train", run)
    found = re.search(r"total training wall time[^:]*: ([\d.]+)s", run.stdout)
    numbers = {"train_s": float(found.group(1))} if found else {}
    return Result(True, f"one round, reduced model ({' '.join(size)}): {run.last_line}", numbers)


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: float
    run: Callable[[Context, float], Result]


#: the check, in order; the budgets add up to at most TOTAL_BUDGET_S
STEPS = (Step("install", 45, step_install), Step("gpu tests", 75, step_gpu_tests),
         Step("streams", 150, step_streams), Step("extract", 150, step_extract), Step("train", 60, step_train))


def run_check(ctx: Context) -> list[tuple[Step, Result, float]]:
    """Every step in turn (each under its budget); ``(step, result, seconds)``."""
    ctx.deadline = time.monotonic() + TOTAL_BUDGET_S
    done = []
    for step in STEPS:
        start = time.monotonic()
        if start >= ctx.deadline:
            result = Result(False, "not run: the check's 8 minutes are spent")
        else:
            try:
                result = step.run(ctx, step.budget_s)
            except Exception as e:  # one step's surprise must not hide the others' numbers
                result = Result(False, f"{type(e).__name__}: {e}")
        done.append((step, result, time.monotonic() - start))
        print(f"{PROG}: {step.name}: {'ok' if result.ok else 'FAILED'} in {done[-1][2]:.1f} s", flush=True)
    return done


def print_table(done: list[tuple[Step, Result, float]], header: str) -> None:
    print(header)
    print(f"{'step':10} {'result':6} {'seconds':>7} {'budget':>6}  numbers")
    for step, result, seconds in done:
        print(f"{step.name:10} {'ok' if result.ok else 'FAILED':6} {seconds:7.1f} {step.budget_s:6.0f}  {result.summary}")
    print(f"{'total':10} {'ok' if all(r.ok for _, r, _ in done) else 'FAILED':6} "
          f"{sum(s for _, _, s in done):7.1f} {sum(s.budget_s for s, _, _ in done):6.0f}")


# --- wheels for the GPU machine ---------------------------------------------------------------------

def pinned_versions(names: list[str], constraints: Path = ROOT / "constraints.txt") -> dict[str, str]:
    """``{name: version}`` of ``names`` as pinned (``name==version``) in ``constraints``."""
    pins = {}
    for line in constraints.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    key = {n: n.lower().replace("_", "-") for n in names}
    missing = [n for n in names if key[n] not in pins]
    if missing:
        raise ValueError(f"{constraints} pins no version of {', '.join(missing)}")
    return {n: pins[key[n]] for n in names}


def download_command(dest: Path, pins: dict[str, str], python: str = sys.executable, deps: bool = False) -> list[str]:
    """pip download of the binary wheels of ``pins`` (``{name: version}``), with their
    dependencies only if ``deps``."""
    return [python, "-m", "pip", "download", "--quiet", *([] if deps else ["--no-deps"]), "--only-binary=:all:",
            "--dest", str(dest), *(f"{n}=={v}" for n, v in pins.items())]


def source_wheel_command(dest: Path, pins: dict[str, str], python: str = sys.executable) -> list[str]:
    """pip wheel of ``pins`` built from their source releases (here, imageio-ffmpeg without its
    bundled ffmpeg), no dependencies, with this environment's setuptools."""
    return [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
            f"--no-binary={','.join(pins)}", "--wheel-dir", str(dest), *(f"{n}=={v}" for n, v in pins.items())]


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def download_wheels(dest: Path, timeout: float = 600) -> int:
    pins = pinned_versions(list(GPU_WHEELS))
    dest.mkdir(parents=True, exist_ok=True)
    binary = {n: v for n, v in pins.items() if n not in FROM_SOURCE}
    source = {n: v for n, v in pins.items() if n in FROM_SOURCE}
    tests = pinned_versions(list(TEST_WHEELS))
    for what, cmd in (("pip download", download_command(dest, binary)),
                      ("pip wheel", source_wheel_command(dest, source)),
                      ("pip download", download_command(dest, tests, deps=True))):
        run = run_measured(cmd, timeout=timeout)
        if not run.ok:
            print(f"{PROG}: error: {what}: {exit_text(run)}: {run.last_line}", file=sys.stderr)
            return 1
    return check_wheels_size(dest)


def check_wheels_size(dest: Path) -> int:
    size = folder_size(dest)
    if size > WHEELS_LIMIT:
        print(f"{PROG}: error: {dest} holds {size / MiB:.1f} MiB, over the {WHEELS_LIMIT / MiB:.0f} MiB that can "
              "be carried; remove the wheels not listed in GPU_WHEELS", file=sys.stderr)
        return 1
    print(f"{dest}: {', '.join(p.name for p in sorted(dest.glob('*.whl')))} ({size / MiB:.1f} MiB of "
          f"{WHEELS_LIMIT / MiB:.0f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="the same steps on the CPU at a tiny size (seconds)")
    p.add_argument("--wheels", type=Path, default=WHEELS, help="folder of wheels to install (default: %(default)s)")
    p.add_argument("--download-wheels", action="store_true",
                   help="instead of the check: pip download the versions pinned in constraints.txt of "
                        f"{', '.join(GPU_WHEELS)} into --wheels and check it stays under 64 MiB")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write every step's result here")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    if a.download_wheels:
        try:
            return download_wheels(a.wheels)
        except (OSError, ValueError) as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 2
    device = a.device or ("cpu" if a.dry_run else "cuda")
    if device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            print(f"{PROG}: error: no CUDA device here (torch {torch.__version__}); --dry-run runs the steps on "
                  "the CPU", file=sys.stderr)
            return 2
        where = f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    else:
        where = f"{device}, {os.cpu_count()} CPUs"
    with tempfile.TemporaryDirectory(prefix="clipae-gpu-check-") as tmp:
        ctx = Context(dry=a.dry_run, device=device, tmp=Path(tmp), wheels=a.wheels)
        root = import_root()
        if root is not None:
            prepend_path(ctx.env, root)
        done = run_check(ctx)
    print_table(done, f"{PROG}{' --dry-run (tiny sizes: not the real numbers)' if a.dry_run else ''}: {where}")
    if a.json:
        try:
            a.json.write_text(json.dumps({"device": where, "dry_run": a.dry_run, "steps": [
                {"step": s.name, "ok": r.ok, "seconds": t, "budget_s": s.budget_s, "summary": r.summary,
                 "numbers": r.numbers} for s, r, t in done]}, indent=1), encoding="utf-8")
        except OSError as e:
            print(f"{PROG}: error: cannot write {a.json}: {e.strerror or e}", file=sys.stderr)
            return 2
    return 0 if all(r.ok for _, r, _ in done) else 1


if __name__ == "__main__":
    sys.exit(main())
