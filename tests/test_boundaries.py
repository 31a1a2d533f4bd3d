"""The package's shape: stages import only earlier stages, and the API process runs without Spark."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The data's journey, in order: a stage may import itself and the stages before it.
STAGES = ("landing", "sources", "datagen", "datasets", "bronze", "silver", "gold", "model", "serving", "feedback",
          "monitor")
ORCHESTRATION = "orchestration"  # chains of stages: may import anything, imported by jobs only


def _imports(path: Path) -> set[str]:
    """Every `recsys.*` module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recsys"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("recsys"))
    return found


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_stages_import_only_earlier_stages_and_shared_modules_import_no_stage():
    wrong = []
    for path in sorted((ROOT / "recsys").rglob("*.py")):
        here = _area(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for target in sorted(_imports(path)):
            there = _area(target)
            if here in (ORCHESTRATION, there):
                continue
            if there == ORCHESTRATION:
                wrong.append(f"{path.relative_to(ROOT)} imports {target}: only jobs run chains of stages")
            elif here in STAGES and there in STAGES and STAGES.index(there) > STAGES.index(here):
                wrong.append(f"{path.relative_to(ROOT)} imports {target}: a later stage")
            elif here not in STAGES and there in STAGES:
                wrong.append(f"{path.relative_to(ROOT)} imports {target}: shared modules serve every stage")
    assert wrong == []


def test_the_api_process_loads_no_spark():
    """The web process formats keys and hashes ids; starting a JVM-backed library for that would
    cost memory and start-up time on every worker."""
    probe = "import sys, recsys.serving.api; print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyspark'))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
