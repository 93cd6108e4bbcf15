"""``api/admin/*``: the ``jupyter lumen`` commands over HTTP, for the admin token only.

Each command of the administrator's CLI (users, pool, grant, keys, revoke, usage)
is one route, ``GET`` to read and ``POST`` to change.  The request's fields are
the command's arguments by name (``{"user": "ada", "coins": "5"}``); they go
through the CLI's own parser and checks and run the CLI's own code, so the
command line and the API cannot drift apart: ``jupyter lumen --url URL grant ada 5``
is this API.  The answer holds the command's JSON result and its text.
"""

from __future__ import annotations

from typing import Any

from .. import cli
from ..core.errors import BadRequest, NotFound
from .base import RestHandler, lumen_endpoint
from .routes import Routes

READS = frozenset({"users", "keys", "usage", "pool"})
WRITES = frozenset({"grant", "pool", "revoke", "new-key"})


class AdminCommandHandler(RestHandler):
    """One CLI command: ``GET`` with query fields, ``POST`` with a JSON body."""

    admin_api = True

    @lumen_endpoint("read")
    async def get(self, command: str) -> None:
        if command not in READS:
            raise self._unknown(command, READS)
        fields: dict[str, Any] = {
            name: self.get_query_argument(name) for name in self.request.query_arguments
        }
        if command == "pool" and ({"max", "clear"} & set(fields)):
            raise BadRequest("Changing a pool is a POST", code="method_not_allowed")
        await self._run(command, fields)

    @lumen_endpoint("write")
    async def post(self, command: str) -> None:
        if command not in WRITES:
            raise self._unknown(command, WRITES)
        await self._run(command, self.json_body())

    @staticmethod
    def _unknown(command: str, known: frozenset[str]) -> NotFound:
        return NotFound(
            f"No admin command '{command}' here; try: {', '.join(sorted(known))}",
            code="unknown_command",
        )

    async def _run(self, command: str, fields: dict[str, Any]) -> None:
        try:
            args = cli.parse_fields(command, fields)
            admin = cli.Admin(self.service.store, self.service)
            data, text = await self.run(args.handler, admin, args)
        except cli.UsageError as error:
            raise BadRequest(
                str(error).removeprefix(f"{cli.PROG} "), code="invalid_command"
            ) from None
        self.send_json({"result": data, "text": text})


def admin_routes(prefix: str) -> Routes:
    """The admin API under ``prefix`` (``<prefix>lumen/api/admin``)."""
    return [(rf"{prefix}/([a-z-]+)", AdminCommandHandler)]
