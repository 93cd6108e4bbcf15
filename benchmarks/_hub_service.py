"""The standalone lumen service with a stand-in hub, for the forwarder benchmark.

    python benchmarks/_hub_service.py --port 8090 [LumenServe options]

Callers without a lumen credential are known by their hub token, as JupyterHub's
``HubAuth`` would resolve it: ``LUMEN_BENCH_HUB_TOKENS`` holds ``token=user`` pairs,
separated by commas.  Not a benchmark itself; ``bench_forwarder.py`` runs it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumen_jupyter.core.accounts import Identity
from lumen_jupyter.service.app import LumenServe


class HubTokens:
    def __init__(self, pairs: str) -> None:
        self.users = dict(pair.split("=", 1) for pair in pairs.split(",") if "=" in pair)

    async def identify(self, handler: Any, action: str) -> Identity | None:
        scheme, _, token = handler.request.headers.get("Authorization", "").partition(" ")
        name = self.users.get(token.strip()) if scheme.lower() == "token" else None
        return None if name is None else Identity(username=name, display_name=name)


def main() -> None:
    LumenServe.session_authenticator = HubTokens(os.environ.get("LUMEN_BENCH_HUB_TOKENS", ""))
    LumenServe.launch_instance(sys.argv[1:])


if __name__ == "__main__":
    main()
