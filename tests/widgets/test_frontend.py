"""The front end as built and as source: the views' unit tests (node), the TypeScript
types (tsc), and the built assets the Python package ships."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FRONTEND = REPO / "labextension"
NODE_MODULES = FRONTEND / "node_modules"

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_MODULES / "esbuild").exists(),
    reason="node or labextension/node_modules missing (pip install ., or jlpm in labextension/)",
)


@needs_node
def test_views_unit_tests() -> None:
    result = subprocess.run(
        ["node", "scripts/run-tests.mjs"], cwd=FRONTEND, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "# fail 0" in result.stdout


@needs_node
def test_typescript_types() -> None:
    tsc = NODE_MODULES / "typescript" / "bin" / "tsc"
    result = subprocess.run(
        ["node", str(tsc), "--noEmit", "-p", str(FRONTEND)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_built_assets() -> None:
    static = REPO / "lumen_jupyter" / "widgets" / "static"
    lab = REPO / "lumen_jupyter" / "labextension"
    if not (static / "profile.js").exists() or not (lab / "package.json").exists():
        pytest.skip("the front end is not built")
    bundle = (static / "profile.js").read_text(encoding="utf-8")
    assert "export" in bundle and "render" in bundle
    assert (static / "profile.css").read_text(encoding="utf-8").count("--jp-") > 10
    meta = json.loads((lab / "package.json").read_text(encoding="utf-8"))
    assert meta["name"] == "lumen-jupyter"
    assert meta["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")
    assert (lab / meta["jupyterlab"]["_build"]["load"]).exists()


def test_lockfile_is_committed_with_the_package() -> None:
    lock = (FRONTEND / "yarn.lock").read_text(encoding="utf-8")
    package = json.loads((FRONTEND / "package.json").read_text(encoding="utf-8"))
    for name in [*package["dependencies"], *package["devDependencies"]]:
        assert f'"{name}@' in lock, name
    assert package["devDependencies"]["typescript"].startswith("~5.9")
