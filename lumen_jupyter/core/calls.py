"""Admission and settlement of model calls: the money side of the gateway.

A call is admitted by reserving its worst-case cost in one transaction (access,
key, pool and balance checked together), and settled to its real usage - never
above the reservation - or released when nothing was delivered.  Every step has a
``*_in`` form that runs inside a transaction the caller owns, so that the gateway
can batch the writes of many calls into one commit.  Nothing here knows about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from . import billing, keyring, rate_limit
from .accounts import Identity
from .catalog import ModelSpec
from .clock import isoformat_z
from .errors import AuthenticationFailed, BudgetExhausted, PermissionDenied, RateLimited
from .money import format_coins
from .pools import ResolvedPool
from .usage import Usage

if TYPE_CHECKING:
    from .service import LumenService


@dataclass(frozen=True)
class Admission:
    """An admitted call: the request to settle or release, and what was reserved."""

    request_id: int
    account_id: int
    model: ModelSpec
    reserved_micro: int
    facts: billing.RequestFacts | None = None
    """What :func:`billing.admit` recorded, so settling needs no read of the request."""
    output_budget: int = 0
    """Output tokens reserved for each choice: the ``max_tokens`` to send upstream."""
    key_id: int | None = None


AdmissionOutcome = Admission | tuple[billing.Refusal, ResolvedPool | None]
"""An admitted call, or why it was refused (raised by ``admission_or_raise``)."""


class Calls:
    """Opens, settles and releases the calls of one :class:`LumenService`."""

    def __init__(
        self,
        service: LumenService,
        *,
        default_output_cap: int,
        rate_limit_per_minute: int = 0,
        rate_limit_sessions: bool = False,
    ) -> None:
        self._service = service
        self.default_output_cap = default_output_cap
        """Output tokens reserved when neither the caller nor the model sets a limit."""
        self.rate_limit_per_minute = rate_limit_per_minute
        """Calls a personal key may start per minute (0: no limit), counted in the store,
        so that every process serving the store shares the limit."""
        self.rate_limit_sessions = rate_limit_sessions
        """Whether calls without a personal key (session, kernel) are limited too, per account."""

    def open_call(
        self,
        who: Identity,
        ctx: billing.CallContext,
        model_name: str,
        *,
        endpoint: str,
        input_tokens: int,
        max_output_tokens: int | None,
        choices: int = 1,
    ) -> Admission:
        """Check access and reserve the worst case of one call, in one transaction."""
        with self._service.store.write() as conn:
            outcome = self.open_call_in(
                conn,
                who,
                ctx,
                model_name,
                endpoint=endpoint,
                input_tokens=input_tokens,
                max_output_tokens=max_output_tokens,
                choices=choices,
            )
        return self.admission_or_raise(outcome)

    def open_call_in(
        self,
        conn: Connection,
        who: Identity,
        ctx: billing.CallContext,
        model_name: str,
        *,
        endpoint: str,
        input_tokens: int,
        max_output_tokens: int | None,
        choices: int = 1,
    ) -> AdmissionOutcome:
        """:meth:`open_call` inside the caller's write transaction; a refusal is returned,
        to be raised by :meth:`admission_or_raise` after the commit (a due refill is kept).
        Access errors (unknown model, consent, revoked key) raise before any write.

        ``choices`` (the request's ``n`` or ``best_of``) multiplies the output reserved:
        each choice may produce the whole output budget."""
        self._check_key(conn, ctx)
        model = self._service.callable_model_in(conn, who, ctx.account_id, model_name)
        now = self._service.clock.now()
        limited = self._take_rate_slot(conn, ctx, now)
        if limited is not None:
            return limited, None
        output = 0
        if endpoint != "embeddings":
            output = billing.output_budget(model, max_output_tokens, self.default_output_cap)
        worst = billing.worst_case_cost(model, input_tokens, output * max(1, choices))
        return self._admit(conn, who, ctx, model, worst, endpoint, now, input_tokens, output)

    def _take_rate_slot(
        self, conn: Connection, ctx: billing.CallContext, now: datetime
    ) -> billing.Refusal | None:
        """The refusal of a call over its rate limit (its window read under a row lock,
        so concurrent admissions in any process cannot all take the last slot)."""
        per_minute = self.rate_limit_per_minute
        if per_minute <= 0:
            return None
        if ctx.key_id is not None:
            wait = rate_limit.take_rate_slot_in(conn, ctx.key_id, per_minute, now)
        elif self.rate_limit_sessions:
            wait = rate_limit.take_account_rate_slot_in(conn, ctx.account_id, per_minute, now)
        else:
            return None
        if wait is None:
            return None
        seconds = int(wait) + 1
        error = RateLimited(
            f"Rate limit of {per_minute} calls per minute reached; retry in {seconds} s"
        )
        error.retry_after = seconds
        return billing.Refusal("rate_limited", error=error)

    def admit(
        self,
        who: Identity,
        ctx: billing.CallContext,
        model: ModelSpec,
        worst_case: int,
        endpoint: str,
    ) -> Admission:
        """Reserve ``worst_case`` for a call to ``model`` (access already checked)."""
        now = self._service.clock.now()
        with self._service.store.write() as conn:
            self._check_key(conn, ctx)
            outcome = self._admit(conn, who, ctx, model, worst_case, endpoint, now, 0, 0)
        return self.admission_or_raise(outcome)

    def _check_key(self, conn: Connection, ctx: billing.CallContext) -> None:
        """A call made with a personal key is admitted only while the key is active and
        unexpired (its budget is checked by the reservation, :func:`billing.admit`)."""
        if ctx.key_id is None:
            return
        try:
            keyring.check_usable(conn, ctx.key_id, self._service.clock.now())
        except AuthenticationFailed:
            self._service.forget_key(ctx.key_id)
            raise

    def _admit(
        self,
        conn: Connection,
        who: Identity,
        ctx: billing.CallContext,
        model: ModelSpec,
        worst: int,
        endpoint: str,
        now: datetime,
        input_tokens: int,
        output_budget: int,
    ) -> AdmissionOutcome:
        resolved = self._service.resolve_pool(conn, who, ctx.account_id)
        outcome = billing.admit(
            self._service.store,
            conn,
            ctx,
            pool=resolved.spec if resolved else None,
            model=model.name,
            endpoint=endpoint,
            worst_case_micro=worst,
            strict=self._service.strict_billing,
            now=now,
            input_tokens=input_tokens,
            instance_id=self._service.instance.id if self._service.instance else None,
        )
        if isinstance(outcome, billing.Refusal):
            return outcome, resolved  # raised after the commit, so a due refill is kept
        metered = resolved is not None and not resolved.spec.unlimited
        reserved = worst if self._service.strict_billing and metered else 0
        return Admission(
            outcome.request_id,
            ctx.account_id,
            model,
            reserved,
            outcome,
            output_budget=output_budget,
            key_id=ctx.key_id,
        )

    def admission_or_raise(self, outcome: AdmissionOutcome) -> Admission:
        """The admission, or the error telling why the call was refused."""
        if isinstance(outcome, Admission):
            return outcome
        raise self._refusal_error(*outcome)

    def _refusal_error(self, refusal: billing.Refusal, resolved: ResolvedPool | None) -> Exception:
        if refusal.error is not None:
            return refusal.error
        if refusal.reason == "no_pool":
            return PermissionDenied(
                "No coin budget has been set up for your account; ask an administrator for one",
                code="no_pool",
            )
        if refusal.reason == "pool_blocked":
            return PermissionDenied(
                "Your coin pool is blocked (max 0); ask an administrator", code="pool_blocked"
            )
        balance = refusal.balance_micro or 0
        refill_comes = (
            refusal.next_refill_at is not None
            and resolved is not None
            and resolved.spec.refresh_micro > 0
        )
        message = f"Coin budget exhausted: your balance is {format_coins(balance)} coins"
        if balance > 0 and refusal.needed_micro:
            message = (
                f"Coin budget too low: this request may cost up to "
                f"{format_coins(refusal.needed_micro)} coins and your balance is "
                f"{format_coins(balance)}; lower max_tokens"
                + (" or wait for the refill" if refill_comes else "")
            )
        if refill_comes and resolved is not None and refusal.next_refill_at is not None:
            message += (
                f". The next refill (+{format_coins(resolved.spec.refresh_micro)} coins/hour) "
                f"comes at {isoformat_z(refusal.next_refill_at)}"
            )
        elif resolved is None or resolved.spec.refresh_micro <= 0:
            message += ". This pool does not refill: ask an administrator to grant more coins"
        else:
            message += ". Ask an administrator to grant more coins"
        return BudgetExhausted(message, next_refill_at=isoformat_z(refusal.next_refill_at))

    def settle(
        self,
        admission: Admission,
        input_tokens: int,
        output_tokens: int,
        *,
        status: str = "ok",
        estimated: bool = False,
        http_status: int | None = 200,
    ) -> billing.Settled | None:
        with self._service.store.write() as conn:
            return self.settle_in(
                conn,
                admission,
                input_tokens,
                output_tokens,
                status=status,
                estimated=estimated,
                http_status=http_status,
            )

    def settle_in(
        self,
        conn: Connection,
        admission: Admission,
        input_tokens: int,
        output_tokens: int,
        *,
        status: str = "ok",
        estimated: bool = False,
        http_status: int | None = 200,
        output_limit: int = 0,
    ) -> billing.Settled | None:
        """:meth:`settle` inside the caller's write transaction.

        ``output_limit`` (the output reserved): more output than that is priced, so
        that the overrun above the cap is known, but counted as the limit."""
        counted = min(output_tokens, output_limit) if output_limit else output_tokens
        return billing.settle(
            self._service.store,
            conn,
            admission.request_id,
            usage=Usage(
                input_tokens,
                counted,
                billing.actual_cost(admission.model, input_tokens, output_tokens),
            ),
            status=status,
            estimated=estimated,
            http_status=http_status,
            now=self._service.clock.now(),
            facts=admission.facts,
        )

    def release(self, admission: Admission, *, status: str, http_status: int | None) -> bool:
        with self._service.store.write() as conn:
            return self.release_in(conn, admission, status=status, http_status=http_status)

    def release_in(
        self, conn: Connection, admission: Admission, *, status: str, http_status: int | None
    ) -> bool:
        """:meth:`release` inside the caller's write transaction."""
        return billing.release(
            conn,
            admission.request_id,
            status=status,
            http_status=http_status,
            now=self._service.clock.now(),
            facts=admission.facts,
        )

    def record_progress_in(self, conn: Connection, admission: Admission, output: int) -> str | None:
        """Note a stream's delivered output; returns why it must stop, if it must:
        ``revoked`` (the personal key it was made with has been revoked) or ``ended``
        (the call is no longer pending: a server that took this one for dead settled it)."""
        if not billing.record_progress(conn, admission.request_id, output):
            return "ended"
        if admission.key_id is not None and not keyring.is_active(conn, admission.key_id):
            return "revoked"
        return None
