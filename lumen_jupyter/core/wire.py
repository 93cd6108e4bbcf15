"""The JSON payloads of the profile REST API, typed once.

The service builds these (mypy checks every field it sets), the handlers send
them, the clients read them, and :mod:`lumen_jupyter.server.openapi` derives its
schemas from them (:func:`lumen_jupyter.server.typed_schema.schema_of`), so the
document cannot describe a field the server does not send, or miss one it does.
The front end's ``types.ts`` is checked against that document in the tests.

Required keys are declared in a class's body; keys sent only in some states are
in a ``total=False`` subclass (works on every supported Python, unlike
``NotRequired``).  ``Timestamp`` and ``Day`` are strings with a format.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

Timestamp = Annotated[str, "date-time"]
"""ISO 8601 in UTC with a ``Z`` suffix and milliseconds."""
Day = Annotated[str, "date"]
"""``YYYY-MM-DD``."""

KeyStatus = Literal["draft", "active", "revoked"]
Access = Literal["allowed", "blocked", "needs_ack", "consented"]
ModelStatus = Literal["ok", "degraded", "down", "disabled"]
PoolStateName = Literal["none", "unlimited", "limited", "blocked"]
Period = Literal["week", "month", "year", "all"]
Bucket = Literal["day", "week", "month"]


class Coins(TypedDict):
    """An exact amount: integer micro-coins and its decimal text."""

    micro: int
    text: str


class Counters(TypedDict):
    requests: int
    input_tokens: int
    output_tokens: int
    tokens: int
    coins_micro: int
    coins: str
    last_used_at: Timestamp | None


class WebChat(Counters):
    conversations: int


class User(TypedDict):
    username: str
    display_name: str
    email: str | None
    initials: str
    avatar_url: str | None


class Tiles(TypedDict):
    groups: list[str]
    coins_used: Coins
    tokens_used: int
    favorite_model: str | None


class _PoolBase(TypedDict):
    state: PoolStateName
    source: str | None


class Pool(_PoolBase, total=False):
    """A limited or blocked pool has every field; ``none`` and ``unlimited`` only two."""

    balance: Coins
    max: Coins
    refresh_per_hour: Coins
    exhausted: bool
    last_refill_at: Timestamp | None
    next_refill_at: Timestamp | None


class Profile(TypedDict):
    user: User
    tiles: Tiles
    pool: Pool
    web_chat: WebChat
    server_time: Timestamp


class Key(TypedDict):
    id: int
    name: str
    hint: str
    status: KeyStatus
    created_at: Timestamp | None
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None
    requests: int
    input_tokens: int
    output_tokens: int
    tokens: int
    coins_micro: int
    coins: str
    budget_micro: int | None
    budget: str | None
    reserved_micro: int
    expires_at: Timestamp | None
    expired: bool


class CreatedKey(Key):
    """The only payload that ever carries a raw key."""

    key: str


class KeyList(TypedDict):
    """The keys asked for (all of them, or a page: ``limit``/``offset``) and how many
    there are in all."""

    keys: list[Key]
    total: int


class KeyRevoked(TypedDict):
    id: int
    result: Literal["revoked", "discarded", "already revoked"]


class Instances(TypedDict):
    configured: int
    healthy: int


class Model(TypedDict):
    name: str
    description: str | None
    active: bool
    access: Access
    status: ModelStatus
    instances: Instances
    needs_consent: bool
    notice: str | None
    notice_digest: str | None
    input_cost_per_million: Coins
    output_cost_per_million: Coins
    max_model_len: int | None
    max_output_tokens: int | None
    supports_function_calling: bool | None
    supports_reasoning: bool | None
    knowledge_cutoff: str | None
    input_modalities: list[str] | None
    output_modalities: list[str] | None
    usage: Counters


class ModelList(TypedDict):
    """The models asked for (all of them, or a page: ``limit``/``offset``) and how many
    there are in all."""

    models: list[Model]
    total: int


class UsageValues(TypedDict):
    requests: int
    input_tokens: int
    output_tokens: int
    tokens: int
    coins_micro: int
    coins: str


class UsageBucket(TypedDict):
    start: Day
    values: dict[str, UsageValues]


class _UsageHistory(TypedDict):
    period: Period
    bucket: Bucket
    group_by: str
    start: Day
    end: Day
    series: list[str]
    buckets: list[UsageBucket]
    totals: dict[str, UsageValues]


class UsageHistory(_UsageHistory, total=False):
    notebook: str
    """With ``group_by=cell``: the notebook whose cells the series are."""


class ErrorBody(TypedDict):
    """OpenAI's error shape; some errors add details (``param``, ``next_refill_at``...)."""

    message: str
    type: str
    code: str


class Error(TypedDict):
    error: ErrorBody


OPEN_SCHEMAS = frozenset({"ErrorBody"})
"""Payloads that may carry more fields than declared (an error's details)."""


# -- request bodies ---------------------------------------------------------------------------


class KeyLimits(TypedDict, total=False):
    """A key's own limits, as people write them (see :mod:`lumen_jupyter.core.key_limits`)."""

    budget: float | str
    expires_at: Timestamp
    expires_in: str | int


class NewKey(KeyLimits, total=False):
    """``POST keys``: without a name the key is a draft until saved or discarded."""

    name: str


class _SaveKeyBase(TypedDict):
    name: str


class SaveKey(_SaveKeyBase, KeyLimits, total=False):
    """``PATCH keys/{id}``: a name; the limits only while the key is a draft."""


class ConsentBody(TypedDict, total=False):
    notice_digest: str
