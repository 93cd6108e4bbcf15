"""The profile widgets: anywidget views of a :class:`~.source.ProfileSource`.

``Profile`` is the whole page; ``BalanceCard``, ``KeysTable``, ``ModelTable`` and
``SpendingChart`` are its parts, usable on their own. All of them render with the
same front-end bundle (``labextension/src/widget.ts`` over the shared views).

Data flows one way: the source's JSON goes into synced traits (``profile``,
``api_keys``, ``models``, ``usage``, ``loading``, ``error``, ``keys_total``,
``models_total``); the front end sends
intents as custom messages (``{"type": "intent", "method": ..., "args": ...,
"request_id": ...}``) and gets a one-off ``reply`` message for each.

The first load sends the first screen first: when the source can page
(``key_page``, ``model_page``), ``api_keys`` holds the first page of the active keys
and ``models`` the first page of the models, with ``keys_total`` / ``models_total``
saying how many there are; the complete lists follow at once, and the totals go back
to ``None``. A few dozen rows reach the browser before the ~0.5 MB of 1,000 keys.

The secret rule: a new key's raw value is never put in a trait (widget state is
saved into notebooks). It goes to the front end only inside the reply to
``create_key``, as a binary buffer of that custom message, and is not kept here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, ClassVar, cast

import anywidget
import traitlets as t

from ..kernel.client import call_listeners as hooks
from ._assets import Asset
from .refresh import LOOP, SUCCESSION, current_run
from .source import ProfileSource, default_source

PERIODS = ("week", "month", "year", "all")
FIRST_PAGE = 40
"""Rows of the keys and models tables the first screen needs (a dozen show)."""
PARTS = ("profile", "keys", "models", "usage")
SECRET_FIELDS = frozenset({"key", "raw_key", "secret"})
NOTIFY_DELAY = LOOP.delay
"""Seconds a refresh waits after :func:`hooks.notify_call`, so a burst of calls refreshes once."""


_FETCHERS = ThreadPoolExecutor(max_workers=len(PARTS), thread_name_prefix="lumen-widget-fetch")
"""The few threads every widget of the kernel fetches its parts with."""


def _without_secrets(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Key rows as they may be synced: any raw-key field dropped, whatever the source sent."""
    return [{k: v for k, v in row.items() if k not in SECRET_FIELDS} for row in rows]


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


class _ProfileWidget(anywidget.AnyWidget):
    """Shared machinery: traits, loading, intents, periodic refresh."""

    _esm = Asset("profile.js")
    _css = Asset("profile.css")

    section = t.Unicode("profile").tag(sync=True)
    profile = t.Dict(allow_none=True, default_value=None).tag(sync=True)
    api_keys = t.List(t.Dict()).tag(sync=True)
    models = t.List(t.Dict()).tag(sync=True)
    usage = t.Dict(allow_none=True, default_value=None).tag(sync=True)
    period = t.Enum(PERIODS, default_value="month").tag(sync=True)
    loading = t.Bool(False).tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    #: While ``api_keys`` is the first page of the active keys: how many there are.
    keys_total = t.Int(None, allow_none=True).tag(sync=True)
    #: While ``models`` is the first page of the models: how many there are.
    models_total = t.Int(None, allow_none=True).tag(sync=True)

    #: Which parts of the source this view shows.
    parts: ClassVar[tuple[str, ...]] = PARTS
    _section: ClassVar[str] = "profile"

    def __init__(
        self,
        source: ProfileSource | None = None,
        *,
        refresh_interval: float = 60.0,
        period: str = "month",
        group_by: str = "model",
        autoload: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(section=self._section, period=period, **kwargs)
        self.source: ProfileSource = source if source is not None else default_source()
        self.group_by = group_by
        self._lock = threading.RLock()
        self._closed = False
        self.on_msg(self._on_custom_msg)
        hooks.register(self)
        # One refresh loop for every widget of the kernel; a re-run cell closes what its
        # previous run made, so neither widgets nor their refreshes pile up.
        self._loaded = threading.Event()
        LOOP.add(self, refresh_interval)
        SUCCESSION.arrive(self, *current_run())
        if autoload:
            # Paint first, fill in: the view shows its skeleton at once and each part as
            # it arrives; the loading happens on the refresh loop, not in the cell.
            self.loading = True
            LOOP.wake(self, delay=0)
        else:
            self._loaded.set()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {type(self.source).__name__}>"

    # -- loading -----------------------------------------------------------------------

    @property
    def refresh_interval(self) -> float:
        return LOOP.interval(self)

    @refresh_interval.setter
    def refresh_interval(self, seconds: float) -> None:
        LOOP.set_interval(self, seconds)

    def refresh(self) -> bool:
        """Load everything this view shows. Returns False (and sets ``error``) on failure.

        The first time, the first screen comes first (see the module's docstring)."""
        try:
            return self._load(self.parts, first=not self._loaded.is_set())
        finally:
            self._loaded.set()

    def wait(self, timeout: float | None = 30.0) -> bool:
        """Wait until the first load has finished (or failed); False on timeout."""
        return self._loaded.wait(timeout)

    def refresh_soon(self) -> None:
        """Refresh off the caller's thread, shortly (what :func:`notify_call` does)."""
        if not self._closed:
            LOOP.wake(self)

    def set_period(self, period: str) -> None:
        """Show the spending history of ``period`` (week, month, year, all)."""
        if period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}")
        with self._lock:
            usage = self.source.usage(period=period, group_by=self.group_by)
            with self.hold_sync():
                self.period = period
                self.usage = usage

    def _pages(self) -> bool:
        """Whether the source can send a first page of the keys and of the models."""
        return callable(getattr(self.source, "key_page", None)) and callable(
            getattr(self.source, "model_page", None)
        )

    def _fetch(self, part: str, first_page: bool = False) -> dict[str, Any]:
        """The traits that show ``part``: a first page (with its total) or all of it."""
        if part == "profile":
            return {"profile": self.source.profile()}
        if part == "keys":
            if first_page:
                page = cast(Any, self.source).key_page(include_revoked=False, limit=FIRST_PAGE)
                return {"api_keys": _without_secrets(page["keys"]), "keys_total": page["total"]}
            return {
                "api_keys": _without_secrets(self.source.keys(include_revoked=True)),
                "keys_total": None,
            }
        if part == "models":
            if first_page:
                page = cast(Any, self.source).model_page(limit=FIRST_PAGE)
                rows = page["models"]
                return {
                    "models": rows,
                    "models_total": page["total"] if len(rows) < page["total"] else None,
                }
            return {"models": self.source.models(), "models_total": None}
        if part == "usage":
            return {"usage": self.source.usage(period=self.period, group_by=self.group_by)}
        raise ValueError(part)

    def _load(self, parts: Iterable[str], *, first: bool = False) -> bool:
        wanted = [p for p in parts if p in self.parts]
        if not wanted or self._closed:
            return True
        with self._lock:
            self.loading = True
            paged = first and self._pages()
            failure = self._fetch_all(wanted, first_page=paged)
            with self.hold_sync():
                self.error = f"Could not load the profile: {_message(failure)}" if failure else ""
                self.loading = False
            if paged and failure is None:
                # The rest, after the first screen: the revoked keys too, and every model.
                rest = [p for p in ("keys", "models") if p in wanted]
                if "models" in rest and self.models_total is None:
                    rest.remove("models")
                failure = self._fetch_all(rest)
                if failure is not None:
                    self.error = f"Could not load the profile: {_message(failure)}"
            return failure is None

    def _fetch_all(self, parts: Sequence[str], *, first_page: bool = False) -> BaseException | None:
        """Fetch ``parts`` at once (the source's HTTP client keeps its connections) and
        show each as soon as it arrives; the first failure, if any."""
        failure: BaseException | None = None
        pending = {_FETCHERS.submit(self._fetch, part, first_page): part for part in parts}
        for future in as_completed(pending):
            try:
                traits = future.result()
            except Exception as exc:
                failure = failure or exc
                continue
            with self.hold_sync():
                for name, value in traits.items():
                    setattr(self, name, value)
        return failure

    # -- intents from the front end -------------------------------------------------------

    def _on_custom_msg(self, _widget: Any, content: Any, buffers: list[Any]) -> None:
        if not isinstance(content, dict) or content.get("type") != "intent":
            return
        request_id = str(content.get("request_id", ""))
        method = str(content.get("method", ""))
        args = content.get("args") or {}
        handler = self._intents().get(method)
        if handler is None or not isinstance(args, dict):
            self._reply(request_id, ok=False, error=f"unknown request {method!r}")
            return
        try:
            handler(request_id, args)
        except Exception as exc:
            self._reply(request_id, ok=False, error=_message(exc))

    def _intents(self) -> dict[str, Callable[[str, dict[str, Any]], None]]:
        return {
            "refresh": self._intent_refresh,
            "create_key": self._intent_create_key,
            "save_key": self._intent_save_key,
            "discard_key": self._intent_discard_key,
            "revoke_key": self._intent_revoke_key,
            "consent": self._intent_consent,
            "set_period": self._intent_set_period,
        }

    def _reply(
        self,
        request_id: str,
        *,
        ok: bool = True,
        error: str | None = None,
        data: Any = None,
        buffers: list[bytes] | None = None,
    ) -> None:
        message = {
            "type": "reply",
            "request_id": request_id,
            "ok": ok,
            "error": error,
            "data": data,
        }
        self.send(message, buffers)

    def _intent_refresh(self, request_id: str, _args: dict[str, Any]) -> None:
        ok = self.refresh()
        self._reply(request_id, ok=ok, error=self.error or None)

    def _intent_create_key(self, request_id: str, args: dict[str, Any]) -> None:
        name = args.get("name")
        created = dict(self.source.create_key(name if isinstance(name, str) and name else None))
        raw = created.pop("key", None)
        if not isinstance(raw, str) or not raw:
            raise RuntimeError("the source returned no key")
        public = {f: created.get(f) for f in ("id", "name", "hint", "status")}
        # The one place the raw key leaves the kernel: a buffer of this reply.
        self._reply(request_id, data=public, buffers=[raw.encode("utf-8")])
        del raw, created
        if public.get("status") == "active":
            self._load(("keys",))

    def _intent_save_key(self, request_id: str, args: dict[str, Any]) -> None:
        limits = {f: args.get(f) for f in ("budget", "expires_in", "expires_at")}
        self.source.save_key(_key_id(args), str(args.get("name", "")), **limits)
        self._load(("keys", "profile"))
        self._reply(request_id)

    def _intent_discard_key(self, request_id: str, args: dict[str, Any]) -> None:
        self.source.revoke_key(_key_id(args))
        self._reply(request_id)

    def _intent_revoke_key(self, request_id: str, args: dict[str, Any]) -> None:
        self.source.revoke_key(_key_id(args))
        self._load(("keys",))
        self._reply(request_id)

    def _intent_consent(self, request_id: str, args: dict[str, Any]) -> None:
        name = args.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("consent needs a model name")
        digest = args.get("notice_digest")
        updated = self.source.consent(name, digest if isinstance(digest, str) else None)
        with self._lock:
            rows = list(self.models)
            for i, row in enumerate(rows):
                if row.get("name") == name:
                    rows[i] = updated
            self.models = rows
        self._reply(request_id, data={"name": name, "access": updated.get("access")})

    def _intent_set_period(self, request_id: str, args: dict[str, Any]) -> None:
        self.set_period(str(args.get("period", "")))
        self._reply(request_id)

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        LOOP.remove(self)
        hooks.unregister(self)
        super().close()


def _key_id(args: dict[str, Any]) -> int:
    value = args.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("a key id is a whole number")
    return value


class Profile(_ProfileWidget):
    """The whole profile page: card and tiles, Web Chat Usage, API keys, model access, spending.

    ``Profile(source)`` where ``source`` is a kernel client (or any
    :class:`~lumen_jupyter.widgets.ProfileSource`); refreshes every
    ``refresh_interval`` seconds (0: only on demand) and after each model call
    reported through :func:`~lumen_jupyter.widgets.notify_call`.
    """

    _section = "profile"
    parts = PARTS


class BalanceCard(_ProfileWidget):
    """The profile card: avatar, name, email and the six tiles with the refill countdown."""

    _section = "balance"
    parts = ("profile",)


class KeysTable(_ProfileWidget):
    """The API Keys section: create (shown once), name, revoke; sortable; deleted keys on demand."""

    _section = "keys"
    parts = ("keys",)


class ModelTable(_ProfileWidget):
    """The Model Access section: search, Show disabled, detail, consent; sortable."""

    _section = "models"
    parts = ("models",)


class SpendingChart(_ProfileWidget):
    """Spending history by period, stacked by model."""

    _section = "spending"
    parts = ("usage",)
