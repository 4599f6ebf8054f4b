"""The core, the gateway and the SLM server stay Dagster-free, so that they run on their own."""

import ast
from pathlib import Path

import slm_pipeline.core
import slm_pipeline.gateway
import slm_pipeline.serving

CORE = Path(slm_pipeline.core.__file__).parent
PACKAGES = (CORE, Path(slm_pipeline.gateway.__file__).parent, Path(slm_pipeline.serving.__file__).parent)


def test_core_modules_do_not_import_dagster():
    offenders = []
    for path in (p for package in PACKAGES for p in package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(CORE.parent)}: {n}" for n in names if n.split(".")[0].startswith("dagster")]
    assert offenders == []
