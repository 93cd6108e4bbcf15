"""A small ProfileSource over the profile REST API, for tests.

Stands in for the kernel client (``lumen_jupyter.kernel.client.lumen_client.LumenClient``)
until it exists: the same methods, plain ``urllib``, a Jupyter token or the
kernel credential. Also imported inside the kernels of the browser tests.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class RestError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RestSource:
    """``base_url`` is the server's URL with its base path, e.g. ``http://127.0.0.1:8888/``."""

    def __init__(self, base_url: str, token: str, *, scheme: str = "token") -> None:
        self.api = base_url.rstrip("/") + "/lumen/api/"
        self.headers = {"Authorization": f"{scheme} {token}"}
        self.calls: list[tuple[str, str]] = []

    @classmethod
    def from_environment(cls) -> RestSource:
        """Inside a kernel started by the server: its URL and kernel credential."""
        from lumen_jupyter.kernel.client.connection import take_kernel_credential

        return cls(os.environ["LUMEN_JUPYTER_URL"], take_kernel_credential(), scheme="Bearer")

    def _call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        params = {
            k: str(v).lower() if isinstance(v, bool) else v
            for k, v in query.items()
            if v is not None
        }
        url = self.api + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        data = None
        headers = dict(self.headers)
        if body is not None or method in ("POST", "PATCH"):
            data = json.dumps(body or {}).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        self.calls.append((method, path))
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
            try:
                message = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {exc.code}"
            raise RestError(exc.code, message) from None
        return json.loads(text) if text else None

    def profile(self) -> dict[str, Any]:
        return self._call("GET", "profile")  # type: ignore[no-any-return]

    def keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        return self._call("GET", "keys", include_revoked=include_revoked)["keys"]  # type: ignore[no-any-return]

    def key_page(
        self, include_revoked: bool = False, *, limit: int, offset: int = 0
    ) -> dict[str, Any]:
        return self._call(  # type: ignore[no-any-return]
            "GET", "keys", include_revoked=include_revoked, limit=limit, offset=offset
        )

    def create_key(self, name: str | None = None) -> dict[str, Any]:
        return self._call("POST", "keys", {} if name is None else {"name": name})  # type: ignore[no-any-return]

    def save_key(self, id: int, name: str, **limits: Any) -> dict[str, Any]:
        body = {"name": name, **{f: v for f, v in limits.items() if v is not None}}
        return self._call("PATCH", f"keys/{id}", body)  # type: ignore[no-any-return]

    def revoke_key(self, id: int) -> dict[str, Any]:
        return self._call("DELETE", f"keys/{id}")  # type: ignore[no-any-return]

    def models(self) -> list[dict[str, Any]]:
        return self._call("GET", "models")["models"]  # type: ignore[no-any-return]

    def model_page(self, *, limit: int, offset: int = 0) -> dict[str, Any]:
        return self._call("GET", "models", limit=limit, offset=offset)  # type: ignore[no-any-return]

    def consent(self, name: str, notice_digest: str | None = None) -> dict[str, Any]:
        body = {} if notice_digest is None else {"notice_digest": notice_digest}
        return self._call("POST", f"models/{urllib.parse.quote(name, safe='')}/consent", body)  # type: ignore[no-any-return]

    def usage(
        self, period: str = "month", bucket: str | None = None, group_by: str = "model"
    ) -> dict[str, Any]:
        return self._call("GET", "usage", period=period, bucket=bucket, group_by=group_by)  # type: ignore[no-any-return]
