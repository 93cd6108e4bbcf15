"""``api/admin/*``: the ``jupyter lumen`` commands over HTTP.

Each command of the administrator's CLI (users, pool, grant, keys, revoke, usage)
is one route, ``GET`` to read and ``POST`` to change.  The request's fields are
the command's arguments by name (``{"user": "ada", "coins": "5"}``); they go
through the CLI's own parser and checks and run the CLI's own code, so the
command line and the API cannot drift apart: ``jupyter lumen --url URL grant ada 5``
is this API.  The answer holds the command's JSON result and its text.

Who may run them: the service's admin token, any command for anyone; a hub user
whose token carries lumen rights (:mod:`.rights`), the commands of those rights
for the users they reach - a delegated granter sees and grants to the members of
their groups only, checked here against the target's hub groups.  With a user
directory (the hub), a command's target is described with their hub groups, so
pools and refills are the ones the user really has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import cli
from .. import cli_format as fmt
from ..core.errors import BadRequest, NotFound, PermissionDenied
from .base import RestHandler, lumen_endpoint
from .rights import Reach
from .routes import Routes
from .service_auth import UserDirectory

READS = frozenset({"users", "keys", "usage", "pool"})
WRITES = frozenset({"grant", "pool", "revoke", "new-key"})


class AdminCommandHandler(RestHandler):
    """One CLI command: ``GET`` with query fields, ``POST`` with a JSON body."""

    admin_api = True

    @property
    def directory(self) -> UserDirectory | None:
        return self.settings.get("lumen_directory")

    @lumen_endpoint("read")
    async def get(self, command: str) -> None:
        if command not in READS:
            raise self._unknown(command, READS)
        fields: dict[str, Any] = {
            name: self.get_query_argument(name) for name in self.request.query_arguments
        }
        if command == "pool" and ({"max", "clear"} & set(fields)):
            raise BadRequest("Changing a pool is a POST", code="method_not_allowed")
        await self._run(command, fields, changes=False)

    @lumen_endpoint("write")
    async def post(self, command: str) -> None:
        if command not in WRITES:
            raise self._unknown(command, WRITES)
        await self._run(command, self.json_body(), changes=True)

    @staticmethod
    def _unknown(command: str, known: frozenset[str]) -> NotFound:
        return NotFound(
            f"No admin command '{command}' here; try: {', '.join(sorted(known))}",
            code="unknown_command",
        )

    def _reach(self, command: str, changes: bool) -> Reach | None:
        """Whom the caller may run ``command`` for (``None``: anyone, the admin token)."""
        principal = self._principal
        assert principal is not None
        if principal.source == "admin":
            return None
        reach = principal.rights.reach(command, changes)
        if not reach:
            raise PermissionDenied(
                f"Your lumen rights do not include '{command}'"
                + (" changes" if command == "pool" and changes else ""),
                code="not_allowed",
            )
        return reach

    async def _groups(self, command: str, target: str | None) -> dict[str, frozenset[str]]:
        """The hub groups of the users the command is about (none without a directory)."""
        directory = self.directory
        if directory is None:
            return {}
        if command == "users":
            return dict(await directory.memberships())
        if target is None:
            return {}
        groups = await directory.groups_of(target)
        return {} if groups is None else {target: groups}

    async def _run(self, command: str, fields: dict[str, Any], *, changes: bool) -> None:
        reach = self._reach(command, changes)
        try:
            args = cli.parse_fields(command, fields)
        except cli.UsageError as error:
            raise self._usage(error) from None
        target = getattr(args, "user", None)
        groups = await self._groups(command, target)
        outside = reach is not None and not reach.covers(target, _of(groups, target))
        if outside and command != "users":
            raise PermissionDenied(
                f"Your lumen rights do not reach {target!r} (not a member of your groups)",
                code="not_in_your_groups",
            )
        admin = cli.Admin(self.service.store, self.service, groups=groups)
        try:
            data, text = await self.run(args.handler, admin, args)
        except cli.UsageError as error:
            raise self._usage(error) from None
        if command == "users" and reach is not None and not reach.everyone:
            seen = [
                u for u in data["users"] if reach.covers(u["username"], _of(groups, u["username"]))
            ]
            data, text = {"users": seen}, fmt.users_text(seen)
        self.send_json({"result": data, "text": text})

    @staticmethod
    def _usage(error: cli.UsageError) -> BadRequest:
        return BadRequest(str(error).removeprefix(f"{cli.PROG} "), code="invalid_command")


def _of(groups: Mapping[str, frozenset[str]], user: str | None) -> frozenset[str] | None:
    return None if user is None else groups.get(user)


def admin_routes(prefix: str) -> Routes:
    """The admin API under ``prefix`` (``<prefix>lumen/api/admin``)."""
    return [(rf"{prefix}/([a-z-]+)", AdminCommandHandler)]
