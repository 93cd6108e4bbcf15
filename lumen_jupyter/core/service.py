"""The one entry point to the domain: what handlers, the gateway and the CLI call.

It ties the catalog (configuration), the store (state) and a clock together
and returns plain JSON-ready dictionaries.  It is synchronous; the server runs
it off the event loop.  Nothing here knows about HTTP or Jupyter.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, bindparam, delete, select

from ..store import Store
from ..store.prepared import HotStatement
from ..store.schema import accounts, api_keys, consents, user_pools
from . import billing, key_limits, keyring, paging, recovery, wire
from .access import may_call, resolve_access
from .accounts import Identity, account_id, ensure_account
from .calls import Calls
from .catalog import Access, Catalog, ModelSpec, PoolSpec
from .cell_usage import cell_history
from .clock import Clock, SystemClock, isoformat_z
from .errors import (
    BadRequest,
    ConsentRequired,
    NotFound,
    PermissionDenied,
)
from .keys import hash_key, looks_like_key
from .ledger import add_to_balance, ensure_balance, read_balance, refill_if_due
from .money import format_coins
from .pools import ResolvedPool, next_refill_at, resolve_pool
from .usage import Counters, Summary, history, model_counters, profile_summary, summarize

_USER_POOL = HotStatement(
    select(user_pools.c.max_micro, user_pools.c.refresh_micro, user_pools.c.starting_micro).where(
        user_pools.c.account_id == bindparam("p_account")
    )
)
_CONSENT_DIGEST = HotStatement(
    select(consents.c.notice_digest).where(
        consents.c.account_id == bindparam("p_account"), consents.c.model == bindparam("p_model")
    )
)
"""Statements of every gateway call, compiled once and run on the DB-API connection."""

_KNOWN_KEYS_LIMIT = 4096
"""Active keys remembered by digest; the memory is simply dropped when full."""

StatusProvider = Callable[[ModelSpec], tuple[str, int, int]]
"""Returns (status, configured endpoints, healthy endpoints) for a model."""


def static_status(model: ModelSpec) -> tuple[str, int, int]:
    """Status when nothing probes the endpoints: configured ones count as healthy."""
    configured = len(model.endpoints)
    if not model.active:
        return "disabled", configured, configured
    return ("ok" if configured else "down"), configured, configured


def coins_json(micro: int) -> wire.Coins:
    return {"micro": micro, "text": format_coins(micro)}


def counters_json(c: Counters) -> wire.Counters:
    return {
        "requests": c.requests,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "tokens": c.tokens,
        "coins_micro": c.coins_micro,
        "coins": format_coins(c.coins_micro),
        "last_used_at": isoformat_z(c.last_used_at),
    }


def avatar_url(email: str | None) -> str | None:
    """Gravatar for ``email`` with the mystery-person fallback, or ``None``."""
    if not email:
        return None
    digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()
    return f"https://www.gravatar.com/avatar/{digest}?d=mp&s=160"


class LumenService:
    """The domain as one object."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        secret: bytes,
        *,
        clock: Clock | None = None,
        strict_billing: bool = True,
        status_provider: StatusProvider = static_status,
        default_output_cap: int = billing.DEFAULT_OUTPUT_CAP,
        rate_limit_per_minute: int = 0,
        rate_limit_sessions: bool = False,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.secret = secret
        self.clock = clock or SystemClock()
        self.strict_billing = strict_billing
        self.status_provider = status_provider
        self.calls = Calls(
            self,
            default_output_cap=default_output_cap,
            rate_limit_per_minute=rate_limit_per_minute,
            rate_limit_sessions=rate_limit_sessions,
        )
        """Admission and settlement of model calls (:mod:`.calls`)."""
        self._account_ids: dict[str, int] = {}
        self._usernames: dict[int, str] = {}
        self._known_keys: dict[str, keyring.KeyOwner] = {}
        self.instance: recovery.Instance | None = None
        """This server process, once registered: the owner of the calls it admits."""
        self.revocation_listeners: list[Callable[[int], None]] = []
        """Called with the key id after a key is revoked here (from the revoking thread)."""

    # -- accounts and pools -------------------------------------------------------------

    def account(self, username: str) -> int:
        cached = self._account_ids.get(username)
        if cached is not None:
            return cached
        with self.store.write() as conn:
            found = ensure_account(self.store, conn, username, self.clock.now())
        self._account_ids[username] = found
        return found

    def cached_account(self, username: str) -> int | None:
        """The account id if :meth:`account` already knows it (no database work)."""
        return self._account_ids.get(username)

    def _user_pool_override(self, conn: Connection, acct: int) -> PoolSpec | None:
        row = _USER_POOL.run(conn, {"p_account": acct}).first()
        if row is None:
            return None
        return PoolSpec(
            max_micro=None if row.max_micro is None else int(row.max_micro),
            refresh_micro=int(row.refresh_micro),
            starting_micro=int(row.starting_micro),
        )

    def resolve_pool(self, conn: Connection, who: Identity, acct: int) -> ResolvedPool | None:
        user_pool = self._user_pool_override(conn, acct) or self.catalog.user(who.username).pool
        groups = self.catalog.groups_of(who.username, who.groups)
        return resolve_pool(user_pool, groups, self.catalog.default_pool)

    def group_names(self, who: Identity) -> list[str]:
        names = {g.name for g in self.catalog.groups_of(who.username, who.groups)}
        return sorted(n for n in names if n != "default")

    def pool_state(self, who: Identity) -> wire.Pool:
        """The Coins Available and Refill Rate tiles; applies a due refill first."""
        acct = self.account(who.username)
        now = self.clock.now()
        with self.store.write() as conn:
            resolved = self.resolve_pool(conn, who, acct)
            if resolved is None:
                return {"state": "none", "source": None}
            spec = resolved.spec
            if spec.unlimited:
                return {"state": "unlimited", "source": resolved.source}
            ensure_balance(self.store, conn, acct, spec, now)
            refill_if_due(conn, acct, spec, now)
            current = read_balance(conn, acct)
        assert current is not None and spec.max_micro is not None
        upcoming = next_refill_at(current.last_refill_at, spec)
        return {
            "state": "blocked" if spec.blocked else "limited",
            "source": resolved.source,
            "balance": coins_json(current.balance_micro),
            "max": coins_json(spec.max_micro),
            "refresh_per_hour": coins_json(spec.refresh_micro),
            "exhausted": current.balance_micro <= 0,
            "last_refill_at": isoformat_z(current.last_refill_at),
            "next_refill_at": isoformat_z(upcoming),
        }

    # -- profile --------------------------------------------------------------------------

    def profile(self, who: Identity) -> wire.Profile:
        acct = self.account(who.username)
        pool = self.pool_state(who)
        with self.store.read() as conn:
            summary = profile_summary(conn, acct)
        return {
            "user": {
                "username": who.username,
                "display_name": who.display_name,
                "email": who.email,
                "initials": who.initials or _initials(who.display_name or who.username),
                "avatar_url": avatar_url(who.email),
            },
            "tiles": {
                "groups": self.group_names(who),
                "coins_used": coins_json(summary.total.coins_micro),
                "tokens_used": summary.total.tokens,
                "favorite_model": summary.favorite_model,
            },
            "pool": pool,
            "web_chat": {
                "conversations": summary.chat_conversations,
                **counters_json(summary.chat),
            },
            "server_time": isoformat_z(self.clock.now()),
        }

    # -- keys -----------------------------------------------------------------------------

    def list_keys(self, who: Identity, include_revoked: bool = False) -> list[wire.Key]:
        acct = self.account(who.username)
        with self.store.read() as conn:
            rows = keyring.list_keys(conn, acct, include_revoked)
        now = self.clock.now()
        return [_key_json(row, now) for row in rows]

    def list_keys_page(
        self, who: Identity, include_revoked: bool, page: paging.Page
    ) -> tuple[list[wire.Key], int]:
        """A page of the keys in the profile's order, and how many there are."""
        acct = self.account(who.username)
        with self.store.read() as conn:
            rows, total = keyring.list_keys_page(conn, acct, include_revoked, page)
        now = self.clock.now()
        return [_key_json(row, now) for row in rows], total

    def create_key(
        self,
        who: Identity,
        name: str | None,
        *,
        budget: Any = None,
        expires_at: Any = None,
        expires_in: Any = None,
    ) -> wire.CreatedKey:
        """A new key: the only response that ever carries the raw key.

        ``budget`` (coins), ``expires_at`` (ISO 8601) or ``expires_in`` (``"7d"``) as
        people write them (see :mod:`key_limits`); none of them: limited by the pool only."""
        now = self.clock.now()
        budget_micro = key_limits.parse_budget(budget)
        expiry = key_limits.parse_expiry(expires_at, expires_in, now)
        acct = self.account(who.username)
        with self.store.write() as conn:
            keyring.purge_stale_drafts(conn, now)
            key_id, raw = keyring.create_key(
                conn,
                acct,
                self.secret,
                now,
                name,
                budget_micro=budget_micro,
                expires_at=expiry,
            )
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one()
        return {**_key_json(row, now), "key": raw}

    def save_key(
        self,
        who: Identity,
        key_id: int,
        name: Any,
        *,
        budget: Any = None,
        expires_at: Any = None,
        expires_in: Any = None,
    ) -> wire.Key:
        """Name a key; a draft may be given its limits as it is saved (see :meth:`create_key`)."""
        now = self.clock.now()
        limits: dict[str, Any] = {}
        budget_micro = key_limits.parse_budget(budget)
        if budget_micro is not None:
            limits["budget_micro"] = budget_micro
        expiry = key_limits.parse_expiry(expires_at, expires_in, now)
        if expiry is not None:
            limits["expires_at"] = expiry
        acct = self.account(who.username)
        with self.store.write() as conn:
            keyring.save_key(conn, acct, key_id, name, now, limits)
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one()
        return _key_json(row, self.clock.now())

    def revoke_key(self, who: Identity, key_id: int) -> str:
        acct = self.account(who.username)
        with self.store.write() as conn:
            outcome = keyring.revoke_key(conn, acct, key_id, self.clock.now())
        self.forget_key(key_id)
        for listener in self.revocation_listeners:
            listener(key_id)
        return outcome

    def key_owner(self, raw: str) -> keyring.KeyOwner | None:
        """The owner of an active key, from the database; an expired key is a 401
        ``key_expired`` (an unknown or revoked one: ``None``)."""
        if not looks_like_key(raw):
            return None
        digest = hash_key(raw, self.secret)
        with self.store.read() as conn:
            owner = keyring.find_active_digest(conn, digest)
        expires_at = owner.expires_at if owner is not None else None
        if expires_at is not None and expires_at <= self.clock.now():
            raise keyring.key_expired(expires_at)
        if owner is not None:
            if len(self._known_keys) >= _KNOWN_KEYS_LIMIT:
                self._known_keys.clear()
            self._known_keys[digest] = owner
        return owner

    def known_key_owner(self, raw: str) -> keyring.KeyOwner | None:
        """The owner of a key found active before, without database work.

        Only for model calls: their admission checks the key again in its own
        transaction (:meth:`open_call`), so a key revoked by another process is
        refused there; a key revoked here is forgotten at once.
        """
        if not looks_like_key(raw):
            return None
        return self._known_keys.get(hash_key(raw, self.secret))

    def forget_key(self, key_id: int) -> None:
        for digest, owner in list(self._known_keys.items()):
            if owner.key_id == key_id:
                del self._known_keys[digest]

    # -- models, access, consent -------------------------------------------------------------

    def _consents(self, conn: Connection, acct: int) -> dict[str, str]:
        rows = conn.execute(
            select(consents.c.model, consents.c.notice_digest).where(consents.c.account_id == acct)
        )
        return {str(m): str(d) for m, d in rows}

    def access_map(self, who: Identity) -> dict[str, Access]:
        acct = self.account(who.username)
        with self.store.read() as conn:
            given = self._consents(conn, acct)
        user = self.catalog.user(who.username)
        groups = self.catalog.groups_of(who.username, who.groups)
        return {
            name: resolve_access(model, user, groups, self.catalog, given.get(name))
            for name, model in self.catalog.models.items()
        }

    def model_json(self, model: ModelSpec, access: Access, usage: Counters) -> wire.Model:
        status, configured, healthy = self.status_provider(model)
        if status not in ("ok", "degraded", "down", "disabled"):
            raise ValueError(f"unknown model status {status!r}")
        data: wire.Model = {
            "name": model.name,
            "description": model.description,
            "active": model.active,
            "access": access.value,
            "status": cast(wire.ModelStatus, status),
            "instances": {"configured": configured, "healthy": healthy},
            "needs_consent": model.needs_consent,
            "notice": model.notice if model.needs_consent else None,
            "notice_digest": model.notice_digest if model.needs_consent else None,
            "input_cost_per_million": coins_json(model.input_price_micro),
            "output_cost_per_million": coins_json(model.output_price_micro),
            "max_model_len": model.max_model_len,
            "max_output_tokens": model.max_output_tokens,
            "supports_function_calling": model.supports_function_calling,
            "supports_reasoning": model.supports_reasoning,
            "knowledge_cutoff": model.knowledge_cutoff,
            "input_modalities": list(model.input_modalities or []) or None,
            "output_modalities": list(model.output_modalities or []) or None,
            "usage": counters_json(usage),
        }
        return data

    def list_models(self, who: Identity) -> list[wire.Model]:
        acct = self.account(who.username)
        access = self.access_map(who)
        with self.store.read() as conn:
            summary = summarize(conn, acct, conversations=False)
        return [
            self.model_json(model, access[name], summary.by_model.get(name, Counters()))
            for name, model in sorted(self.catalog.models.items())
        ]

    def list_models_page(self, who: Identity, page: paging.Page) -> tuple[list[wire.Model], int]:
        """A page of the Model Access rows in the profile's order, and how many there are."""
        names = paging.in_name_order(list(self.catalog.models), name=str, tie=str)
        shown = page.of(names)
        acct = self.account(who.username)
        access = self.access_map(who)
        with self.store.read() as conn:
            used = model_counters(conn, acct, None if page.everything else shown)
        return [
            self.model_json(self.catalog.models[name], access[name], used.get(name, Counters()))
            for name in shown
        ], len(names)

    def visible_models(self, who: Identity) -> list[tuple[ModelSpec, Access]]:
        """The models this user can call now, for the OpenAI ``GET /v1/models`` list.

        No pool means an empty list; blocked models are hidden, and so are
        unconsented ones while consent is required.
        """
        acct = self.account(who.username)
        with self.store.read() as conn:
            if self.resolve_pool(conn, who, acct) is None:
                return []
        access = self.access_map(who)
        return [
            (model, access[name])
            for name, model in sorted(self.catalog.models.items())
            if may_call(access[name], self.catalog.require_consent)
        ]

    def findable_model(self, who: Identity, name: str) -> tuple[ModelSpec, Access] | None:
        """The model for ``GET /v1/models/{name}``: one this user can call now, or one
        they may call once they consent (so a client that looks before calling finds
        it); ``None`` for unknown, disabled and blocked models, and without a pool."""
        model = self.catalog.models.get(name)
        if model is None or not model.active:
            return None
        acct = self.account(who.username)
        with self.store.read() as conn:
            if self.resolve_pool(conn, who, acct) is None:
                return None
            access = self._access_to(conn, who, acct, name)
        if access is None or access is Access.BLOCKED:
            return None
        return model, access

    def model_detail(self, who: Identity, name: str) -> wire.Model:
        model = self.catalog.models.get(name)
        if model is None:
            raise NotFound(f"no model named {name!r}", code="model_not_found")
        acct = self.account(who.username)
        with self.store.read() as conn:
            summary = summarize(conn, acct, conversations=False)
        access = self.access_map(who)[name]
        return self.model_json(model, access, summary.by_model.get(name, Counters()))

    def consent(self, who: Identity, name: str, notice_digest: str | None = None) -> wire.Model:
        """Acknowledge a model's current notice.  Blocked or consent-free models are a 400.

        When ``notice_digest`` is given it must match the current notice, so a
        person cannot accept a text they were not shown.
        """
        model = self.catalog.models.get(name)
        if model is None:
            raise NotFound(f"no model named {name!r}", code="model_not_found")
        access = self.access_map(who)[name]
        if access is Access.BLOCKED:
            raise BadRequest(f"{name} is blocked for you; consent cannot unblock it")
        if not model.needs_consent:
            raise BadRequest(f"{name} does not need consent")
        if notice_digest is not None and notice_digest != model.notice_digest:
            raise BadRequest(
                f"the notice of {name} has changed; read it again before accepting",
                code="notice_changed",
            )
        acct = self.account(who.username)
        now = self.clock.now()
        with self.store.write() as conn:
            self.store.upsert(
                conn,
                consents,
                {
                    "account_id": acct,
                    "model": name,
                    "notice_digest": model.notice_digest,
                    "created_at": now,
                },
                keys=("account_id", "model"),
                replace=("notice_digest", "created_at"),
            )
        return self.model_detail(who, name)

    # -- usage ------------------------------------------------------------------------------

    def usage_history(
        self,
        who: Identity,
        period: str,
        bucket: str | None,
        group_by: str,
        notebook: str | None = None,
    ) -> wire.UsageHistory:
        """Spending over time split by ``group_by``; by ``cell`` for one ``notebook``."""
        acct = self.account(who.username)
        with self.store.read() as conn:
            if group_by == "cell":
                return cell_history(
                    conn,
                    acct,
                    notebook=notebook,
                    period=period,
                    bucket=bucket,
                    today=self.clock.now().date(),
                )
            names: dict[int, str] = {}
            if group_by == "key":
                rows = conn.execute(
                    select(api_keys.c.id, api_keys.c.name, api_keys.c.hint).where(
                        api_keys.c.account_id == acct
                    )
                ).all()
                seen = Counter(str(row.name) for row in rows)
                names = {
                    int(row.id): f"{row.name} ({row.hint})" if seen[str(row.name)] > 1 else row.name
                    for row in rows
                }
            return history(
                conn,
                acct,
                period=period,
                bucket=bucket,
                group_by=group_by,
                today=self.clock.now().date(),
                key_names=names,
            )

    def summary(self, who: Identity) -> Summary:
        with self.store.read() as conn:
            return summarize(conn, self.account(who.username))

    # -- the gateway's part -------------------------------------------------------------------

    def _access_to(self, conn: Connection, who: Identity, acct: int, name: str) -> Access | None:
        model = self.catalog.models.get(name)
        if model is None:
            return None
        digest = _CONSENT_DIGEST.run(conn, {"p_account": acct, "p_model": name}).scalar()
        user = self.catalog.user(who.username)
        groups = self.catalog.groups_of(who.username, who.groups)
        return resolve_access(model, user, groups, self.catalog, digest)

    def callable_model_in(self, conn: Connection, who: Identity, acct: int, name: str) -> ModelSpec:
        """The model, if this user may call it now; else the error to answer."""
        model = self.catalog.models.get(name)
        access = self._access_to(conn, who, acct, name)
        if model is None or access is None:
            raise NotFound(f"The model '{name}' does not exist", code="model_not_found")
        if not model.active:
            raise NotFound(f"The model '{name}' is disabled", code="model_disabled")
        if access is Access.BLOCKED:
            raise PermissionDenied(
                f"You do not have access to '{name}'; ask an administrator for access",
                code="model_blocked",
            )
        if not may_call(access, self.catalog.require_consent):
            raise ConsentRequired(name)
        return model

    def callable_model(self, who: Identity, name: str) -> ModelSpec:
        acct = self.account(who.username)
        with self.store.read() as conn:
            return self.callable_model_in(conn, who, acct, name)

    # -- instances and recovery ---------------------------------------------------------------

    def register_instance(self, me: recovery.Instance) -> None:
        """Own the calls this process admits from now on (see :mod:`recovery`)."""
        with self.store.write() as conn:
            recovery.register(conn, me, self.clock.now())
        self.instance = me

    def heartbeat_in(self, conn: Connection) -> None:
        if self.instance is not None:
            recovery.heartbeat(conn, self.instance, self.clock.now())

    def retire_instance(self) -> tuple[int, int]:
        """A clean stop: settle or release this process's calls still open (they end with
        it) and leave the register; returns (settled, released)."""
        if self.instance is None:
            return 0, 0
        with self.store.write() as conn:
            outcome = recovery.reconcile(
                self.store, conn, self.catalog, self.instance.id, self.clock.now()
            )
        self.instance = None
        return outcome

    def recover(
        self,
        process_exists: Callable[[int], bool] = recovery.process_exists,
        *,
        stale_after: float = recovery.STALE_AFTER_SECONDS,
        started_before: datetime | None = None,
    ) -> recovery.Recovered:
        """Settle or release the calls of dead instances (and, with ``started_before``,
        the calls left by versions that had no instances); never a live one's."""
        assert self.instance is not None, "register_instance first"
        now = self.clock.now()
        settled = released = 0
        with self.store.write() as conn:
            dead = recovery.dead_instances(
                conn, self.instance, now, stale_after=stale_after, process_exists=process_exists
            )
            owners: list[str | None] = list(dead)
            if started_before is not None:
                owners.append(None)
            for owner in owners:
                done, freed = recovery.reconcile(
                    self.store, conn, self.catalog, owner, now, started_before=started_before
                )
                settled += done
                released += freed
        return recovery.Recovered(len(dead), settled, released)

    # -- administration ---------------------------------------------------------------------

    def grant(self, who: Identity, amount_micro: int, note: str | None = None) -> wire.Pool:
        """Add (or, negative, take) coins by hand: an ``adjust`` ledger row."""
        acct = self.account(who.username)
        now = self.clock.now()
        with self.store.write() as conn:
            resolved = self.resolve_pool(conn, who, acct)
            if resolved is None or resolved.spec.unlimited:
                state = "no pool" if resolved is None else "an unlimited pool"
                raise BadRequest(f"{who.username} has {state}; there is no balance to adjust")
            ensure_balance(self.store, conn, acct, resolved.spec, now)
            refill_if_due(conn, acct, resolved.spec, now)
            add_to_balance(conn, acct, amount_micro, "adjust", now, note=note or "admin grant")
        return self.pool_state(who)

    def clamp_to_max(self, who: Identity) -> int:
        """Lower a balance above its pool's max to the max (an ``adjust`` row); returns
        the coins taken.  Refills never lower a balance, so this is the admin's way."""
        acct = self.account(who.username)
        now = self.clock.now()
        with self.store.write() as conn:
            resolved = self.resolve_pool(conn, who, acct)
            if resolved is None or resolved.spec.max_micro is None:
                return 0
            ensure_balance(self.store, conn, acct, resolved.spec, now)
            refill_if_due(conn, acct, resolved.spec, now)
            current = read_balance(conn, acct, for_update=True)
            excess = 0 if current is None else current.balance_micro - resolved.spec.max_micro
            if excess <= 0:
                return 0
            add_to_balance(conn, acct, -excess, "adjust", now, note="lowered to the pool's max")
        return excess

    def set_user_pool(self, username: str, pool: PoolSpec | None) -> None:
        """Give ``username`` their own pool (``None`` removes it)."""
        acct = self.account(username)
        with self.store.write() as conn:
            conn.execute(delete(user_pools).where(user_pools.c.account_id == acct))
            if pool is not None:
                conn.execute(
                    user_pools.insert().values(
                        account_id=acct,
                        max_micro=pool.max_micro,
                        refresh_micro=pool.refresh_micro,
                        starting_micro=pool.starting_micro,
                        updated_at=self.clock.now(),
                    )
                )

    def known_account(self, username: str) -> int | None:
        with self.store.read() as conn:
            return account_id(conn, username)

    def cached_username(self, account: int) -> str | None:
        """The user of an account if :meth:`username_of` already knows it (no database work)."""
        return self._usernames.get(account)

    def username_of(self, account: int) -> str | None:
        """The user an account belongs to (a personal key names only its account)."""
        known = self._usernames.get(account)
        if known is not None:
            return known
        with self.store.read() as conn:
            row = conn.execute(select(accounts.c.username).where(accounts.c.id == account)).first()
        if row is None:
            return None
        self._usernames[account] = str(row[0])
        return str(row[0])


def _key_json(row: Any, now: datetime) -> wire.Key:
    expires_at = row.expires_at
    return {
        "id": int(row.id),
        "name": row.name,
        "hint": row.hint,
        "status": row.status,
        "created_at": isoformat_z(row.created_at),
        "revoked_at": isoformat_z(row.revoked_at),
        "last_used_at": isoformat_z(row.last_used_at),
        "requests": int(row.requests),
        "input_tokens": int(row.input_tokens),
        "output_tokens": int(row.output_tokens),
        "tokens": int(row.input_tokens) + int(row.output_tokens),
        "coins_micro": int(row.coins_micro),
        "coins": format_coins(int(row.coins_micro)),
        "budget_micro": None if row.budget_micro is None else int(row.budget_micro),
        "budget": None if row.budget_micro is None else format_coins(int(row.budget_micro)),
        "reserved_micro": int(row.reserved_micro or 0),
        "expires_at": isoformat_z(expires_at),
        "expired": expires_at is not None and expires_at <= now,
    }


def _initials(name: str) -> str:
    parts = [p for p in name.replace(".", " ").replace("_", " ").split() if p]
    return "".join(p[0] for p in parts[:2]).upper() or "?"
