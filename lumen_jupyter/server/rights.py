"""What a caller may do to other users' accounts, read from their hub token's scopes.

In a JupyterHub deployment the right to change money is a *custom scope* on the
token, never the hub's ``admin`` flag: a user's server and kernel tokens never
carry custom scopes, so an admin's own kernel cannot mint coins.

* ``custom:lumen:admin`` - every ``api/admin/*`` command, for anyone;
* ``custom:lumen:grant!group=G`` - ``grant`` coins, and read the pool, usage and
  user list, for members of hub group ``G`` only (checked by the service against
  the target's groups, which the hub does not do for custom scopes).

Both accept the hub's filters ``!group=G`` and ``!user=U``; without a filter they
reach everyone.  Other filters reach no one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ADMIN_SCOPE = "custom:lumen:admin"
GRANT_SCOPE = "custom:lumen:grant"

DELEGATED = frozenset({("grant", True), ("pool", False), ("usage", False), ("users", False)})
"""The ``(command, changes)`` pairs the grant scope allows: grant coins, and read
what a granter needs to see (the pool, usage, the list of users)."""


@dataclass(frozen=True)
class Reach:
    """Whose accounts a right covers."""

    everyone: bool = False
    groups: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return self.everyone or bool(self.groups) or bool(self.users)

    def covers(self, username: str | None, groups: Iterable[str] | None) -> bool:
        """Whether the right covers ``username``, a member of hub ``groups`` (``None``:
        the hub does not know the user)."""
        if self.everyone:
            return True
        if username is None:
            return False
        if username in self.users:
            return True
        return groups is not None and not self.groups.isdisjoint(groups)

    def __or__(self, other: Reach) -> Reach:
        return Reach(
            self.everyone or other.everyone,
            self.groups | other.groups,
            self.users | other.users,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "everyone": self.everyone,
            "groups": sorted(self.groups),
            "users": sorted(self.users),
        }


NOBODY = Reach()


@dataclass(frozen=True)
class Rights:
    """A caller's rights over other accounts: none, unless a scope gave some."""

    admin: Reach = NOBODY
    grant: Reach = NOBODY

    def __bool__(self) -> bool:
        return bool(self.admin) or bool(self.grant)

    def reach(self, command: str, changes: bool) -> Reach:
        """Whom ``command`` (a change, or a read) may be run for."""
        if (command, changes) in DELEGATED:
            return self.admin | self.grant
        return self.admin

    def to_json(self) -> dict[str, Any]:
        return {"admin": self.admin.to_json(), "grant": self.grant.to_json()}


NO_RIGHTS = Rights()


def rights_from_scopes(scopes: Iterable[str]) -> Rights:
    """The rights a token's (expanded) scopes give."""
    reaches = {ADMIN_SCOPE: NOBODY, GRANT_SCOPE: NOBODY}
    for scope in scopes:
        base, _, scope_filter = scope.partition("!")
        if base not in reaches:
            continue
        reaches[base] = reaches[base] | _reach_of(scope_filter)
    return Rights(admin=reaches[ADMIN_SCOPE], grant=reaches[GRANT_SCOPE])


def _reach_of(scope_filter: str) -> Reach:
    if not scope_filter:
        return Reach(everyone=True)
    kind, _, name = scope_filter.partition("=")
    if not name:
        return NOBODY
    if kind == "group":
        return Reach(groups=frozenset({name}))
    if kind == "user":
        return Reach(users=frozenset({name}))
    return NOBODY
