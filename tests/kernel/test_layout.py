"""The kernel package split by job: the public names stay, the layers point one way.

``lumen_jupyter.kernel`` is ``client`` (talks to the gateway), ``display`` (renders)
and ``magics`` (runs ``%lumen``).  Magics may use both others, display may use the
client's formatters, the client uses neither.  The names notebooks import - from
``lumen_jupyter``, ``lumen_jupyter.kernel`` and the two older module paths
``lumen_jupyter.kernel.client`` and ``lumen_jupyter.kernel.magics`` - still resolve.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

import lumen_jupyter
import lumen_jupyter.kernel as kernel
from lumen_jupyter.kernel.client.async_client import AsyncLumenClient
from lumen_jupyter.kernel.client.lumen_client import LumenClient
from lumen_jupyter.kernel.magics.lumen_magics import LumenMagics, load_ipython_extension

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", kernel.__all__)
def test_every_kernel_name_resolves_to_its_module(name: str) -> None:
    obj = getattr(kernel, name)
    home = importlib.import_module(f"lumen_jupyter.kernel.{kernel._EXPORTS[name]}")
    assert obj is getattr(home, name)
    assert name in dir(home)


def test_the_older_module_paths_still_import() -> None:
    from lumen_jupyter.kernel.client import AsyncLumenClient as async_client
    from lumen_jupyter.kernel.client import LumenClient as client
    from lumen_jupyter.kernel.magics import LumenMagics as magics
    from lumen_jupyter.kernel.magics import load_ipython_extension as load

    assert (client, async_client, magics, load) == (
        LumenClient,
        AsyncLumenClient,
        LumenMagics,
        load_ipython_extension,
    )
    with pytest.raises(AttributeError):
        _ = lumen_jupyter.kernel.client.NoSuchName
    assert callable(lumen_jupyter.client) and callable(lumen_jupyter.openai_client)


@pytest.mark.parametrize("extension", ["lumen_jupyter", "lumen_jupyter.kernel.magics"])
def test_load_ext_registers_the_magics(extension: str) -> None:
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", extension)
    try:
        assert "lumen" in ip.magics_manager.magics["line"]
        assert "lumen" in ip.magics_manager.magics["cell"]
    finally:
        ip.run_line_magic("unload_ext", extension)
    assert "lumen" not in ip.magics_manager.magics["line"]


def _modules(package: str) -> list[str]:
    path = REPO / "lumen_jupyter" / "kernel" / package
    return [f"lumen_jupyter.kernel.{package}.{m.name}" for m in pkgutil.iter_modules([str(path)])]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("client", ("display", "magics")), ("display", ("magics",))],
)
def test_layers_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    modules = _modules(package)
    assert len(modules) >= 5
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[2:3] in {[[f] for f in forbidden]!r}"
        " and m.startswith('lumen_jupyter.kernel.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"
