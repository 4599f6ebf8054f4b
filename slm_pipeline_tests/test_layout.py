"""The core stays Dagster-free, so the gateway and scripts can use it on their own."""

import ast
from pathlib import Path

import slm_pipeline.core

CORE = Path(slm_pipeline.core.__file__).parent


def test_core_modules_do_not_import_dagster():
    offenders = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(CORE)}: {n}" for n in names if n.split(".")[0].startswith("dagster")]
    assert offenders == []
