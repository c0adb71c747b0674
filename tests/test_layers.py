"""The layout is the architecture: every module imports only from its own layer or the layers below, and no import
cycle exists anywhere (read from the source with ``ast``, imports inside functions included).

    0  scrcl.errors, scrcl.atomic             what every layer may raise and how files are written
    1  datamodules                            registry → download → readers → preprocessing → graphs → DataModule
    2  scrcl.model                            encoders, refinement, network, losses, objective
    3  scrcl.eval                             clustering, metrics, plots, spatial maps, analyses
    4  scrcl.train                            config, LightningModule, callbacks, run, results, CLI
    5  scrcl.experiments                      launcher, sweeps, ablations, tables' shared code
    6  scrcl (package), scrcl.api             the Python API
    7  train.py, evaluate.py, benchmarks/, studies/   entry points: nothing imports them
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [
    ("scrcl.errors", 0), ("scrcl.atomic", 0),
    ("datamodules", 1), ("scrcl.model", 2), ("scrcl.eval", 3), ("scrcl.train", 4), ("scrcl.experiments", 5),
    ("scrcl.api", 6), ("scrcl", 6),
    ("train", 7), ("evaluate", 7), ("benchmarks", 7), ("studies", 7),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def sources() -> dict[str, Path]:
    files = [*ROOT.glob("scrcl/**/*.py"), *ROOT.glob("datamodules/**/*.py"), *ROOT.glob("benchmarks/*.py"),
             *ROOT.glob("studies/*.py"), ROOT / "train.py", ROOT / "evaluate.py"]
    return {module_name(p): p for p in files}


def layer(module: str) -> int:
    for prefix, rank in LAYERS:  # the first (most specific) prefix that matches
        if module == prefix or module.startswith(prefix + "."):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def project_imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The project's modules that ``module`` imports, anywhere in its source (``from a import b`` counts a.b when
    that is a module, else a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = sources()
    known = set(modules)
    return {m: project_imports(m, p, known) for m, p in modules.items()}


def test_every_import_goes_down_or_stays_in_its_layer():
    upward = sorted(f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
                    for m, targets in graph().items() for t in targets if layer(t) > layer(m))
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_what_they_should():
    """The graph is not empty and knows the edges the layout is built on (else the tests above could not fail)."""
    edges = graph()
    assert "scrcl.model.losses" in edges["scrcl.model.objective"]
    assert "datamodules.datamodule" in edges["scrcl.train.run"]
    assert layer("scrcl.train.run") == 4 and layer("scrcl.errors") == 0 and layer("scrcl") == 6


def test_packages_import_without_a_cycle_in_a_fresh_interpreter():
    proc = subprocess.run([sys.executable, "-c", "import scrcl, datamodules, scrcl.train.run, scrcl.experiments.launcher"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
