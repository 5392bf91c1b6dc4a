"""The Dockerfile installs from the Makefile's constraints file, installs ffmpeg, exposes the CLIs.

Docker cannot run here: these tests read the Dockerfile as the Docker builder would.
"""
import configparser
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return out


def shell_commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN line: tokens between the shell's && || ; | { } operators."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    cmds, cur = [], []
    for tok in lexer:
        if tok in ("&&", "||", ";", "|", "{", "}", ">", "&"):
            if cur:
                cmds.append(cur)
            cur = []
        else:
            cur.append(tok)
    return cmds + ([cur] if cur else [])


def pip_installs(steps) -> list[list[str]]:
    cmds = [c for kind, args in steps if kind == "RUN" for c in shell_commands(args)]
    return [c for c in cmds if c[:2] == ["pip", "install"] or c[1:4] == ["-m", "pip", "install"]]


def constraint_files(cmd: list[str]) -> list[str]:
    return [cmd[i + 1] for i, tok in enumerate(cmd[:-1]) if tok in ("-c", "--constraint")]


STEPS = instructions(DOCKERFILE.read_text())


def test_base_is_a_cuda_image():
    froms = [args for kind, args in STEPS if kind == "FROM"]
    assert len(froms) == 1 and re.match(r"(nvidia/cuda:[\d.]+-|pytorch/pytorch:[\d.]+-cuda)", froms[0])
    # the CUDA of the base matches the one the pinned torch wheel is built for (13.0)
    assert "13.0" in froms[0]


def test_installs_with_the_makefiles_constraints_file():
    makefile = (ROOT / "Makefile").read_text()
    make_constraints = set(re.findall(r"pip install[^\n]*?-c\s+(\S+)", makefile))
    assert make_constraints == {"constraints.txt"}
    copies = [shlex.split(args) for kind, args in STEPS if kind == "COPY"]
    copied_to = [c[-1] for c in copies if c[:-1] == ["constraints.txt"]]
    assert len(copied_to) == 1, "constraints.txt must be copied from the repository root"
    installs = pip_installs(STEPS)
    assert installs, "the Dockerfile installs nothing with pip"
    for cmd in installs:  # every install is constrained by that very file
        assert constraint_files(cmd) == copied_to, cmd
    # the pinned trio and clipae itself are among what is installed
    names = {tok for cmd in installs for tok in cmd[2:] if not tok.startswith("-")} - set(copied_to)
    assert {"torch", "torchvision", "torchaudio"} <= names
    repo_copy = [c[-1] for c in copies if c[:-1] == ["."]]
    assert len(repo_copy) == 1 and any(n.startswith(repo_copy[0]) and n != copied_to[0] for n in names)
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert (pins["torch"], pins["torchvision"], pins["torchaudio"]) == ("2.11.0", "0.26.0", "2.11.0")


def test_installs_ffmpeg():
    apt = [c for kind, args in STEPS if kind == "RUN" for c in shell_commands(args) if c[:2] == ["apt-get", "install"]]
    assert any("ffmpeg" in c for c in apt)


def test_every_console_script_is_checked_on_path():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    scripts = {line.split("=")[0].strip() for line in cfg["options.entry_points"]["console_scripts"].splitlines() if line.strip()}
    assert "clipae-import-features" in scripts and "clipae-extract" in scripts
    checked = {tok for kind, args in STEPS if kind == "RUN" and "command -v" in args
               for cmd in shell_commands(args) for tok in cmd if tok.startswith("clipae-")}
    assert checked == scripts
    # pip is the virtualenv's, whose bin/ (where console scripts land) is first on PATH
    venvs = [c[-1] for kind, args in STEPS if kind == "RUN" for c in shell_commands(args) if c[1:3] == ["-m", "venv"]]
    env_path = [args for kind, args in STEPS if kind == "ENV" and args.startswith("PATH=")]
    assert len(venvs) == 1 and env_path and env_path[0].startswith(f"PATH={venvs[0]}/bin:")


def test_build_context_leaves_out_local_environments():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignored)


def test_readme_documents_gpu_runs_for_extraction_and_training():
    text = (ROOT / "docker" / "README.md").read_text()
    lines = text.replace("\\\n", " ").splitlines()  # continuation lines joined
    commands = " ".join(line for line in lines if line.startswith("docker run --gpus all"))
    assert "clipae clipae-extract" in commands and "clipae clipae-train" in commands
    assert "docker build -f docker/Dockerfile" in text
