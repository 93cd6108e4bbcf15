"""The database tables.  Money columns are BIGINT micro-coins.

Mutable state only: configuration (models, groups, pools from YAML) stays in
memory; the store keeps accounts, balances and their ledger, keys, consents,
usage counters, a daily roll-up for history charts, and the request log.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from .types import UTCDateTime

metadata = MetaData()

accounts = Table(
    "lumen_accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(255), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

user_pools = Table(
    "lumen_user_pools",
    metadata,
    Column("account_id", Integer, ForeignKey("lumen_accounts.id"), primary_key=True),
    Column("max_micro", BigInteger, nullable=True),  # NULL = unlimited
    Column("refresh_micro", BigInteger, nullable=False),
    Column("starting_micro", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

balances = Table(
    "lumen_balances",
    metadata,
    Column("account_id", Integer, ForeignKey("lumen_accounts.id"), primary_key=True),
    Column("balance_micro", BigInteger, nullable=False),
    Column("last_refill_at", UTCDateTime(), nullable=False),
)

ledger = Table(
    "lumen_ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("lumen_accounts.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # grant refill reserve settle release adjust
    Column("amount_micro", BigInteger, nullable=False),
    Column("request_id", BigInteger, nullable=True),
    Column("note", String(255), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_lumen_ledger_account", "account_id", "id"),
)

api_keys = Table(
    "lumen_api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("lumen_accounts.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("hint", String(16), nullable=False),
    Column("status", String(8), nullable=False),  # draft active revoked
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("last_used_at", UTCDateTime(), nullable=True),
    Column("requests", BigInteger, nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("coins_micro", BigInteger, nullable=False, default=0),
    # A key's own limits: at most budget_micro spent (NULL: only the pool limits it),
    # counting the worst case of its calls in flight (reserved_micro); unusable from
    # expires_at on (NULL: never expires).
    Column("budget_micro", BigInteger, nullable=True),
    Column("reserved_micro", BigInteger, nullable=False, default=0),
    Column("expires_at", UTCDateTime(), nullable=True),
    Index("ix_lumen_api_keys_account", "account_id", "status"),
)

consents = Table(
    "lumen_consents",
    metadata,
    Column("account_id", Integer, ForeignKey("lumen_accounts.id"), primary_key=True),
    Column("model", String(255), primary_key=True),
    Column("notice_digest", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

usage_stats = Table(
    "lumen_usage_stats",
    metadata,
    Column("account_id", Integer, ForeignKey("lumen_accounts.id"), primary_key=True),
    Column("model", String(255), primary_key=True),
    Column("source", String(16), primary_key=True),  # api kernel chat session
    Column("requests", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("coins_micro", BigInteger, nullable=False),
    Column("last_used_at", UTCDateTime(), nullable=False),
)

usage_daily = Table(
    "lumen_usage_daily",
    metadata,
    Column("account_id", Integer, ForeignKey("lumen_accounts.id"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("model", String(255), primary_key=True),
    Column("source", String(16), primary_key=True),
    Column("key_id", Integer, primary_key=True),  # 0 when no personal key was used
    Column("notebook", String(1024), primary_key=True),  # "" when unknown
    Column("requests", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("coins_micro", BigInteger, nullable=False),
)

requests_log = Table(
    "lumen_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("lumen_accounts.id"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("model", String(255), nullable=False),
    Column("endpoint", String(32), nullable=False),  # chat completions embeddings
    Column("key_id", Integer, nullable=True),
    Column("source", String(16), nullable=False),
    Column("notebook", Text, nullable=True),
    Column("cell", String(64), nullable=True),
    Column("conversation", String(64), nullable=True),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("reserved_micro", BigInteger, nullable=False, default=0),
    Column("coins_micro", BigInteger, nullable=False, default=0),
    Column("duration_ms", Integer, nullable=True),
    Column("status", String(16), nullable=False),  # pending ok error aborted
    Column("http_status", Integer, nullable=True),
    Column("estimated", Boolean, nullable=False, default=False),
    Column("metered", Boolean, nullable=False, default=True),
    # The server process holding a pending call; its heartbeat says whether it lives.
    Column("instance_id", String(40), nullable=True),
    # The most this call may be charged (its worst case); anything an upstream
    # reports above it is recorded in overrun_micro for the admin, not billed.
    Column("cap_micro", BigInteger, nullable=False, default=0),
    Column("overrun_micro", BigInteger, nullable=False, default=0),
    # What the call reserved on its personal key's budget (returned when it ends).
    Column("key_reserved_micro", BigInteger, nullable=False, default=0),
    Index("ix_lumen_requests_account_time", "account_id", "created_at"),
    Index("ix_lumen_requests_chat", "account_id", "source", "conversation"),
    Index("ix_lumen_requests_status", "status"),
)

usage_monthly = Table(
    "lumen_usage_monthly",
    metadata,
    Column("account_id", Integer, ForeignKey("lumen_accounts.id"), primary_key=True),
    Column("month", Date, primary_key=True),  # the first day of the month
    Column("model", String(255), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("coins_micro", BigInteger, nullable=False),
)

chat_conversations = Table(
    "lumen_chat_conversations",
    metadata,
    Column("account_id", Integer, ForeignKey("lumen_accounts.id"), primary_key=True),
    Column("conversation", String(64), primary_key=True),
    Column("started_at", UTCDateTime(), nullable=False),
)

instances = Table(
    "lumen_instances",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
)
"""Running server processes on this store, each with a heartbeat: a pending call belongs
to one of them, and only a dead one's calls are reconciled."""

meta = Table(
    "lumen_schema",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", UTCDateTime(), nullable=False),
)
