"""analysis reads files only: importing every module pulls in none of comm, train, sim, torch or mpi4py."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("comm", "train", "sim", "torch", "mpi4py")


def test_importing_every_module_loads_no_forbidden_package():
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import analysis\n"
        "names = [m.name for m in pkgutil.walk_packages(analysis.__path__, 'analysis.')]\n"
        "for n in names: importlib.import_module(n)\n"
        "import analysis.cli; analysis.cli.build_parser()\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(json.dumps({'modules': names, 'bad': bad}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "analysis.cli" in result["modules"] and len(result["modules"]) >= 10
    assert result["bad"] == []


def test_no_import_statement_names_a_forbidden_package_even_lazily():
    for path in sorted((ROOT / "analysis").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [(node.module or "").split(".")[0]] if node.level == 0 else []
            else:
                continue
            assert not set(roots) & set(FORBIDDEN), f"{path.name}:{node.lineno} imports {roots}"
