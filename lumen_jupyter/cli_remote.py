"""``jupyter lumen --url URL COMMAND``: the administrator's commands, run by a service.

When the money lives in a lumen service (a JupyterHub deployment, say), the
administrator needs no database access: the command is sent to the service's
admin API with the admin token, which the service checks, runs through the very
same code, and answers with the result and its text.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

TOKEN_FILE_ENV = "LUMEN_ADMIN_TOKEN_FILE"
WRITES = frozenset({"grant", "revoke", "new-key"})
TIMEOUT_SECONDS = 30.0


class RemoteError(Exception):
    """The service refused the command or could not be reached (one line, for stderr)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_token_file() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "lumen" / "admin_token"


def read_token(args: argparse.Namespace) -> str:
    path = Path(
        getattr(args, "token_file", None) or os.environ.get(TOKEN_FILE_ENV) or default_token_file()
    ).expanduser()
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise RemoteError(f"cannot read the admin token from {path}: {exc.strerror}", 2) from None


def admin_url(base: str, command: str) -> str:
    if not base.startswith(("http://", "https://")):
        raise RemoteError(f"--url must start with http:// or https:// (got {base!r})", 2)
    return f"{base.rstrip('/')}/lumen/api/admin/{command}"


def run_remote(args: argparse.Namespace, fields: dict[str, Any]) -> tuple[Any, str]:
    """Run ``args.command`` on the service at ``args.url``; returns (result, text)."""
    url = admin_url(args.url, args.command)
    changes = args.command in WRITES or (
        args.command == "pool" and ("max" in fields or "clear" in fields)
    )
    headers = {"Authorization": f"Bearer {read_token(args)}", "Accept": "application/json"}
    if changes:
        body: bytes | None = json.dumps(fields).encode()
        headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    else:
        query = urllib.parse.urlencode({k: ("true" if v is True else v) for k, v in fields.items()})
        request = urllib.request.Request(f"{url}?{query}" if query else url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RemoteError(_message(exc), 2 if 400 <= exc.code < 500 else 1) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteError(f"cannot reach {args.url}: {reason}", 1) from None
    return answer["result"], str(answer["text"])


def _message(error: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(error.read())["error"]["message"]
    except (ValueError, KeyError, TypeError):
        detail = error.reason
    return f"the service answered {error.code}: {detail}"
