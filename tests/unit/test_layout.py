"""House rules a test can see: the import direction between packages and the size of modules."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.parallel.harness import REPO, mpi_env

PACKAGES = ("comm", "sim", "train", "analysis", "cluster", "atomicio")


def _modules(pkg: str) -> list[Path]:
    return sorted((REPO / pkg).rglob("*.py"))


def _top_level_imports(path: Path) -> set[str]:
    """Names imported anywhere in the module (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("pkg,forbidden", [("sim", {"mpi4py", "torch", "comm", "train", "analysis"}),
                                           ("analysis", {"comm", "train", "mpi4py", "torch"}),
                                           ("cluster", {"comm", "sim", "train", "analysis", "mpi4py", "torch"}),
                                           # the shared file-safety helper: standard library only
                                           ("atomicio", {"mpi4py", "torch", "numpy", "comm", "sim", "train",
                                                         "analysis"})])
def test_import_direction(pkg, forbidden):
    for path in _modules(pkg):
        bad = _top_level_imports(path) & forbidden
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_comm_never_imports_torch_at_module_level():
    for path in _modules("comm"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # statements at module level only; torch inside functions is lazy and allowed
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] == "torch" for m in mods), f"{path.name} imports torch"


def test_every_package_imports_and_sim_pulls_in_neither_mpi4py_nor_torch():
    code = ("import sys, sim, analysis, train, comm; "
            "print(sorted(m for m in ('torch',) if m in sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=mpi_env(), capture_output=True)
    code = "import sys, sim; print('mpi4py' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=mpi_env(), capture_output=True,
                         text=True).stdout.split()
    assert out == ["False", "False"]


def test_modules_stay_small():
    big = [f"{p.relative_to(REPO)} ({n} lines)" for pkg in PACKAGES for p in _modules(pkg)
           if (n := len(p.read_text().splitlines())) > 500]
    assert not big, f"modules over 500 lines (one concept per module, ~400 lines): {big}"
