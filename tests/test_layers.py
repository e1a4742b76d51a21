"""The shape of the code: layers that only point down (the import-linter contract in
pyproject.toml) and no import cycle between modules, function-level imports included."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_the_layer_contract_holds():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    out = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """One import cycle between modules, if any (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.find_modules_directly_imported_by(m)):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph.modules):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_module_imports_itself_through_others():
    # grimp counts imports inside functions too: one placed there to dodge a cycle shows here.
    graph = grimp.build_graph("streamrec")
    assert cycle(graph) is None, " -> ".join(cycle(graph) or [])
