"""The layer rule of the README: no import runs from a lower layer to a higher one, no import cycle,
extraction never imports the model, and the model never decodes video (imports read from the source)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: bottom to top; a module may import its own layer and the layers below it
LAYERS = [
    ("core",),
    ("decoding",),
    ("extractors",),
    ("pipeline",),
    ("datasets",),
    ("models",),
    ("eval",),
    ("bench", "cli"),
    ("demo",),
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def package_modules() -> dict[str, Path]:
    """``{"clipae.x.y": path}`` of every module of the package (tests and docker left out)."""
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", "docker", "build") or any(p.startswith(".") for p in rel.parts):
            continue
        parts = ["clipae", *rel.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = package_modules()


def imports_of(module: str, path: Path) -> set[str]:
    """The ``clipae`` modules ``module`` imports, lazily inside functions too, relative imports resolved."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            # "from . import x" / "from ..eval import naming" may name modules
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]
        else:
            continue
        found |= {n for n in names if n == "clipae" or n.startswith("clipae.")}
    return found - {module}


GRAPH = {m: imports_of(m, p) for m, p in MODULES.items()}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for dep in GRAPH.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_every_package_folder_has_a_layer():
    folders = {layer_of(m) for m in MODULES} - {None, "__main__"}
    assert folders <= set(LEVEL), f"folders without a layer: {sorted(folders - set(LEVEL))}"


def test_no_import_runs_upward():
    upward = [f"{m} -> {dep}" for m, deps in GRAPH.items() for dep in deps
              if layer_of(m) in LEVEL and layer_of(dep) in LEVEL and LEVEL[layer_of(dep)] > LEVEL[layer_of(m)]]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    cycles = sorted(m for m in GRAPH if m in closure(m) and not m.endswith("__main__"))
    assert not cycles, f"modules in an import cycle: {cycles}"


@pytest.mark.parametrize("lower,forbidden", [
    ("clipae.pipeline", "clipae.models"),        # extraction never imports the model
    ("clipae.extractors", "clipae.models"),
    ("clipae.decoding", "clipae.extractors"),    # decoding imports no stream
    ("clipae.models", "clipae.decoding"),        # the model never decodes video
    ("clipae.models", "clipae.extractors"),
])
def test_forbidden_reach(lower, forbidden):
    bad = sorted(f"{m} reaches {d}" for m in MODULES if m == lower or m.startswith(lower + ".")
                 for d in closure(m) if d == forbidden or d.startswith(forbidden + "."))
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_violation(tmp_path):
    """The parser resolves relative imports: a lower module importing a higher one is reported."""
    fake = tmp_path / "core" / "bad.py"
    fake.parent.mkdir()
    fake.write_text("from ..models import train\nfrom .errors import BadInput\n")
    deps = imports_of("clipae.core.bad", fake)
    assert "clipae.models.train" in deps and "clipae.core.errors" in deps
    assert LEVEL[layer_of("clipae.models.train")] > LEVEL[layer_of("clipae.core.bad")]
