"""What an administrator configured: models, endpoints, pools, groups, users.

These are plain frozen values built once from traitlets and the Lumen-style
YAML (see :mod:`lumen_jupyter.core.config`).  The mutable state - balances,
keys, consents, usage - lives in the store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from enum import Enum


class Rule(str, Enum):
    """An access rule as written in configuration."""

    ALLOWED = "allowed"
    BLOCKED = "blocked"


class Access(str, Enum):
    """A user's resolved access to one model."""

    ALLOWED = "allowed"
    BLOCKED = "blocked"
    NEEDS_ACK = "needs_ack"
    CONSENTED = "consented"


class Secret:
    """A credential that never shows itself in a repr, str, log or JSON."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The raw value; only the upstream client may call this."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class PoolSpec:
    """A coin pool in micro-coins. ``max_micro`` None means unlimited; 0 means blocked."""

    max_micro: int | None
    refresh_micro: int = 0
    starting_micro: int = 0

    @property
    def unlimited(self) -> bool:
        return self.max_micro is None

    @property
    def blocked(self) -> bool:
        return self.max_micro == 0

    @property
    def refills(self) -> bool:
        return not self.unlimited and self.refresh_micro > 0


@dataclass(frozen=True)
class EndpointSpec:
    """One upstream that serves a model."""

    url: str
    model: str
    api_key: Secret = field(default_factory=lambda: Secret(""))


@dataclass(frozen=True)
class ModelSpec:
    """A model as the gateway offers it."""

    name: str
    input_price_micro: int = 0
    output_price_micro: int = 0
    endpoints: tuple[EndpointSpec, ...] = ()
    active: bool = True
    access: Rule | None = None
    needs_consent: bool = False
    notice: str = ""
    description: str | None = None
    max_model_len: int | None = None
    max_output_tokens: int | None = None
    supports_function_calling: bool | None = None
    supports_reasoning: bool | None = None
    knowledge_cutoff: str | None = None
    input_modalities: tuple[str, ...] | None = None
    output_modalities: tuple[str, ...] | None = None

    @property
    def notice_digest(self) -> str:
        """SHA-256 of the notice: a consent is bound to the exact text it acknowledged."""
        return hashlib.sha256(self.notice.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class GroupSpec:
    name: str
    pool: PoolSpec | None = None
    rules: dict[str, Rule] = field(default_factory=dict)
    default_rule: Rule | None = None
    members: frozenset[str] = frozenset()
    active: bool = True


@dataclass(frozen=True)
class UserSpec:
    name: str
    pool: PoolSpec | None = None
    rules: dict[str, Rule] = field(default_factory=dict)
    default_rule: Rule | None = None
    groups: frozenset[str] = frozenset()
    email: str | None = None
    display_name: str | None = None


@dataclass(frozen=True)
class Catalog:
    """Everything configured, looked up by name."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    groups: dict[str, GroupSpec] = field(default_factory=dict)
    users: dict[str, UserSpec] = field(default_factory=dict)
    default_pool: PoolSpec | None = None
    default_rule: Rule = Rule.BLOCKED
    require_consent: bool = True
    #: ``app.database.url``: the store when no trait or environment variable names one.
    database_url: str | None = None
    #: ``rate_limiting.limit`` as calls per minute, when the file sets one.
    rate_limit_per_minute: int | None = None
    #: ``admins``: read and shown, but no web administration exists here.
    admins: tuple[str, ...] = ()
    #: Keys the file sets that have no effect here, by dotted path (logged at start).
    unused_keys: tuple[str, ...] = ()

    def user(self, username: str) -> UserSpec:
        return self.users.get(username) or UserSpec(name=username)

    def groups_of(self, username: str, extra: frozenset[str] = frozenset()) -> list[GroupSpec]:
        """The active groups ``username`` belongs to.

        Config membership (``members``, the user's ``groups``), plus ``extra``, plus
        the groups everyone is in: a group named ``default`` and the ``groups`` of
        the ``users.default`` entry (Lumen's meaning of both).
        """
        names = set(extra) | set(self.user(username).groups)
        names |= {g.name for g in self.groups.values() if username in g.members}
        names.add(EVERYONE)
        if EVERYONE in self.users:
            names |= self.users[EVERYONE].groups
        return [self.groups[n] for n in sorted(names) if n in self.groups and self.groups[n].active]

    def user_key(self, username: str, email: str | None = None) -> str | None:
        """The ``users`` entry that describes this user, if any.

        An entry may be keyed by the username or by the user's email (Lumen keys
        users by email); keys and emails compare case-insensitively.
        """
        if username in self.users:
            return username
        wanted = {username.casefold()} | ({email.casefold()} if email else set())
        for key in self.users:
            if key != EVERYONE and key.casefold() in wanted:
                return key
        return None

    def for_user(self, username: str, email: str | None = None) -> Catalog:
        """This catalog with the user's entry and group memberships found under ``username``.

        A server serves one user; entries keyed (or members listed) by that user's
        email are moved to the username, so every lookup by username finds them.
        """
        wanted = {username.casefold()} | ({email.casefold()} if email else set())
        users = dict(self.users)
        key = self.user_key(username, email)
        if key is not None and key != username:
            spec = users.pop(key)
            users[username] = replace(
                spec, name=username, email=spec.email or (key if "@" in key else None)
            )
        groups = {
            name: replace(group, members=group.members | {username})
            if any(m.casefold() in wanted for m in group.members)
            else group
            for name, group in self.groups.items()
        }
        return replace(self, users=users, groups=groups)


EVERYONE = "default"
"""A group, or a ``users`` entry, of this name applies to every user."""
