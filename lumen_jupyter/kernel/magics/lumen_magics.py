"""``%lumen`` and ``%%lumen``: the profile, keys, models, usage and a chat, in a notebook.

``%load_ext lumen_jupyter`` registers :class:`LumenMagics`.  It is a
``Configurable``: ``%config LumenMagics.default_model = "demo-pro"`` (or
``c.LumenMagics.default_model`` in an IPython profile) sets the chat model.
Gateway errors are shown as one line that says what to do, never a traceback.
"""

# IPython's display functions and magic decorators carry no type hints.
# mypy: disable-error-code="no-untyped-call,untyped-decorator"

from __future__ import annotations

import argparse
import io
import os
import uuid
from collections.abc import Callable
from typing import Any

from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display
from traitlets import Bool, Float, Int, Unicode

from ..client.attribution import current_cell_id, notebook_path
from ..client.chat import Conversation
from ..client.errors import LumenAPIError
from ..client.lumen_client import LumenClient
from ..display.render import Fields, Notice, Stack
from ..display.reveal import HEADLESS, NOTEBOOK, OneTimeDisplays, front_end, ipython_publisher
from ..display.usage_views import estimate_view, help_view, usage_chart, usage_totals
from ..display.views import (
    balance_line,
    key_placeholder,
    key_reveal,
    keys_table,
    limited_view,
    model_detail,
    models_table,
    notice_view,
    profile_view,
    session_view,
    v1_models_table,
    visible_models,
)
from .cell_labels import label_cells
from .chat_cell import ChatRequest, ChatRunner
from .parsing import HelpShown, chat_parser, interpolate, line_parser, parse, split_line


@magics_class
class LumenMagics(Magics):
    """The ``%lumen`` line magic and the ``%%lumen`` chat cell magic."""

    default_model = Unicode(
        "", help="Model for %%lumen when -m is not given; empty: the first available one."
    ).tag(config=True)
    max_tokens = Int(
        0, help="max_tokens for %%lumen when --max-tokens is not given; 0: the model's limit."
    ).tag(config=True)
    temperature = Float(
        None, allow_none=True, help="temperature for %%lumen; None: the model's default."
    ).tag(config=True)
    stream_interval = Float(
        0.1, help="Seconds between updates of a streamed answer (0: every chunk)."
    ).tag(config=True)
    key_reveal_seconds = Float(
        60.0,
        help="A new key can be shown this long after it is created (in a notebook, by the "
        "widget that asks the kernel for it; in a terminal, until the next cell runs).",
    ).tag(config=True)
    raise_errors = Bool(
        False, help="Raise LumenAPIError instead of showing one line (stops Run All)."
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._client: LumenClient | None = None
        self.conversation = Conversation()
        self.one_time = OneTimeDisplays(ipython_publisher)
        self._parser = line_parser()
        self._chat_parser = chat_parser()

    # -- plumbing -----------------------------------------------------------------------

    @property
    def client(self) -> LumenClient:
        """The client, made on first use (finding the gateway may fail: one line)."""
        if self._client is None:
            self._client = LumenClient()
        return self._client

    @client.setter
    def client(self, value: LumenClient | None) -> None:
        self._client = value

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def terminal(self) -> bool:
        return type(self.shell).__name__ == "TerminalInteractiveShell"

    def _show(self, view: Any) -> None:
        display(view)

    def _fail(self, error: LumenAPIError) -> None:
        if self.raise_errors:
            raise error
        self._show(Notice(error.one_line(), "error"))

    def _run(self, action: Callable[[], None]) -> None:
        try:
            action()
        except LumenAPIError as error:
            self._fail(error)
        except HelpShown:
            pass

    # -- the magic ------------------------------------------------------------------------

    @line_cell_magic
    def lumen(self, line: str, cell: str | None = None) -> None:
        """Lumen: `%lumen help` lists the commands; `%%lumen` chats with a model."""
        if cell is not None:
            self._chat(line, cell)
            return
        try:
            args = parse(self._parser, split_line(line))
        except HelpShown:
            return
        command = args.command or "dashboard"
        handler = getattr(self, f"_cmd_{command}")
        self._run(lambda: handler(args))

    # -- line commands --------------------------------------------------------------------

    def _cmd_help(self, args: argparse.Namespace) -> None:
        self._show(help_view())

    def _cmd_dashboard(self, args: argparse.Namespace) -> None:
        client = self.client
        if client.profile_api_available() and getattr(self.shell, "kernel", None) is not None:
            widget = self._profile_widget(client)
            if widget is not None:
                self._show(widget)
                return
        self._cmd_profile(args)

    @staticmethod
    def _profile_widget(client: LumenClient) -> Any:
        try:
            from lumen_jupyter.widgets import Profile
        except ImportError:
            return None
        try:
            return Profile(client)
        except Exception:  # a broken widget must not hide the profile
            return None

    def _cmd_profile(self, args: argparse.Namespace) -> None:
        client = self.client
        if not client.profile_api_available():
            self._show_limited(client)
            return
        profile = client.profile()
        keys = client.keys()
        models = visible_models(client.models())
        self._show(profile_view(profile, keys, models))

    def _show_limited(self, client: LumenClient) -> None:
        reason = client.profile_api_reason or "No profile API here"
        models = client.v1_models()
        self._show(limited_view(reason, models, client.session_usage(), client.connection.v1_url))

    def _cmd_balance(self, args: argparse.Namespace) -> None:
        client = self.client
        if not client.profile_api_available():
            session = client.session_usage()
            self._show(
                Notice(
                    f"{client.profile_api_reason}: the balance is not known here. This session "
                    f"used {session['coins']['text']} coins in {session['requests']} requests.",
                    "warn",
                )
            )
            return
        line, level = balance_line(client.profile().get("pool") or {})
        self._show(Notice(line, level))

    def _cmd_status(self, args: argparse.Namespace) -> None:
        client = self.client
        connection = client.connection
        try:
            api = "yes" if client.profile_api_available() else f"no: {client.profile_api_reason}"
        except LumenAPIError as error:
            api = f"unknown: {error.one_line()}"
        kind = "kernel credential" if connection.kind == "kernel" else "personal API key"
        conversation = self.conversation
        self._show(
            Fields(
                [
                    ("Gateway", connection.v1_url),
                    ("Profile API", api),
                    ("Credential", f"{kind} {connection.credential_hint} ({connection.origin})"),
                    ("Notebook", notebook_path() or "—"),
                    ("Cell", current_cell_id() or "—"),
                    (
                        "Conversation",
                        f"{conversation.id[:8]}… · {conversation.exchanges} exchange(s)"
                        + (f" · {conversation.model}" if conversation.model else ""),
                    ),
                    ("Default model", self.default_model or "first available"),
                ],
                title="lumen status",
            )
        )

    def _cmd_keys(self, args: argparse.Namespace) -> None:
        client = self.client
        if args.action == "new":
            self._new_key(client, args.name, args.save, args.budget, args.expires)
        elif args.action == "revoke":
            self._revoke_key(client, args.key)
        else:
            self._show(keys_table(client.keys(include_revoked=args.all)))

    def _new_key(
        self,
        client: LumenClient,
        name: str,
        save: str | None,
        budget: str | None = None,
        expires: str | None = None,
    ) -> None:
        if not name.strip():
            raise UsageError("%lumen keys new: give the key a name")
        expiry: dict[str, str] = {}
        if expires is not None:
            # a lifetime ("7d") or a moment ("2030-01-31T12:00Z"): the gateway checks both
            lifetime = expires.strip()[:1].isdigit() and "-" not in expires
            expiry = {"expires_in" if lifetime else "expires_at": expires.strip()}
        target = None
        if save:
            target = os.path.abspath(os.path.expanduser(save))
            if os.path.exists(target):
                raise UsageError(f"%lumen keys new: {save} exists; choose another file")
        created = client.create_key(name, budget=budget, **expiry)
        raw = str(created.pop("key"))
        where = front_end(self.shell)
        if target is not None:
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(descriptor, "w", encoding="utf-8") as handle:
                handle.write(raw + "\n")
            self._show(
                Notice(
                    f"API key '{name}' (id {created['id']}, {created['hint']}) was written to "
                    f"{save} (readable by you only); it is not shown.",
                    "ok",
                )
            )
            return
        if where == HEADLESS:
            self._show(Notice(headless_key_advice(created), "warn"))
            return
        if where == NOTEBOOK:
            from lumen_jupyter.widgets.new_key import NewKey

            self._show(NewKey(created, raw, self.key_reveal_seconds))
            return
        self.one_time.show(
            key_reveal(created, raw, self.key_reveal_seconds),
            key_placeholder(created),
            f"lumen-key-{uuid.uuid4().hex}",
            self.key_reveal_seconds,
        )

    def _revoke_key(self, client: LumenClient, which: str) -> None:
        keys = client.keys(include_revoked=True)
        if which.isdigit():
            key_id = int(which)
            named = [k for k in keys if k["id"] == key_id]
        else:
            named = [k for k in keys if k.get("name") == which and k.get("status") == "active"]
            if len(named) != 1:
                count = "no" if not named else "more than one"
                raise UsageError(
                    f"%lumen keys revoke: {count} active key is named {which!r}; give its ID "
                    "(see `%lumen keys`)"
                )
            key_id = int(named[0]["id"])
        result = client.revoke_key(key_id)["result"]
        label = f"'{named[0].get('name')}' (id {key_id})" if named else f"id {key_id}"
        text = {
            "revoked": f"API key {label} revoked: calls with it now fail; its history is kept.",
            "already revoked": f"API key {label} was already revoked.",
            "discarded": f"Unsaved key {label} discarded.",
        }.get(result, f"API key {label}: {result}.")
        self._show(Notice(text, "ok"))

    def _cmd_models(self, args: argparse.Namespace) -> None:
        client = self.client
        has_api = client.profile_api_available()
        if args.name:
            if has_api:
                self._show(model_detail(client.model(args.name)))
                return
            for model in client.v1_models():
                if model.get("id") == args.name:
                    self._show(model_detail({**model, "name": model.get("id")}))
                    return
            raise LumenAPIError(
                f"The model '{args.name}' does not exist",
                status=404,
                code="model_not_found",
                model=args.name,
            )
        if has_api:
            rows = visible_models(client.models(), show_all=args.all, text=args.filter)
            self._show(models_table(rows))
            return
        data = client.v1_models()
        if args.filter:
            data = [m for m in data if args.filter.lower() in str(m.get("id", "")).lower()]
        self._show(v1_models_table(data))

    def _cmd_consent(self, args: argparse.Namespace) -> None:
        client = self.client
        name = args.model
        if not client.profile_api_available():
            raise LumenAPIError(
                f"{client.profile_api_reason}: consent cannot be given from here. Accept the "
                f"notice of {name} on your gateway's Profile page.",
                code="no_profile_api",
            )
        model = client.model(name)
        if model.get("access") == "blocked":
            self._show(Notice(f"You have no access to {name}; consent cannot unblock it.", "error"))
            return
        if not model.get("needs_consent"):
            self._show(Notice(f"{name} does not need consent: you can use it directly.", "info"))
            return
        if model.get("access") == "consented":
            self._show(Notice(f"You have already accepted the notice of {name}.", "ok"))
            return
        self._show(notice_view(model, how_to_accept=not args.accept))
        if not args.accept and not self._confirm(f"Accept the notice of {name}? [y/N] "):
            return
        client.consent(name, model.get("notice_digest"))
        self._show(Notice(f"Accepted: you can now use {name}.", "ok"))

    def _confirm(self, question: str) -> bool:
        try:
            answer = input(question)
        except (StdinNotImplementedError, EOFError):
            self._show(
                Notice("This front end cannot ask; add `--accept` to accept the notice.", "info")
            )
            return False
        if answer.strip().lower() in ("y", "yes"):
            return True
        self._show(Notice("Not accepted.", "info"))
        return False

    def _cmd_usage(self, args: argparse.Namespace) -> None:
        client = self.client
        if not client.profile_api_available():
            self._show(
                Stack(
                    [
                        Notice(
                            f"{client.profile_api_reason}: only this session's usage is "
                            "known here.",
                            "warn",
                        ),
                        session_view(client.session_usage()),
                    ]
                )
            )
            return
        if args.notebook and args.by != "cell":
            raise UsageError("%lumen usage: --notebook goes with --by cell")
        if args.by == "cell" and not (args.notebook or notebook_path()):
            raise UsageError(
                "%lumen usage --by cell: this kernel runs no notebook; name one with --notebook"
            )
        history = client.usage(
            period=args.period, bucket=args.bucket, group_by=args.by, notebook=args.notebook
        )
        if args.by == "cell":
            history = label_cells(history)
        if not args.plot:
            self._show(usage_totals(history))
            return
        figure = _matplotlib_chart(history, args.metric)
        if figure is not None:
            self._show(figure)
            self._show(usage_totals(history))
            return
        self._show(
            Stack(
                [
                    usage_chart(history, args.metric),
                    usage_totals(history),
                    Notice("matplotlib is not installed: this is a text chart.", "info"),
                ]
            )
        )

    def _cmd_estimate(self, args: argparse.Namespace) -> None:
        client = self.client
        estimate = client.estimate(args.model, " ".join(args.prompt), args.max_tokens)
        pool = None
        try:
            if client.profile_api_available():
                pool = client.profile().get("pool")
        except LumenAPIError:
            pool = None
        self._show(estimate_view(estimate, pool))

    # -- the chat cell --------------------------------------------------------------------

    def _chat(self, line: str, cell: str) -> None:
        try:
            args = parse(self._chat_parser, split_line(line))
        except HelpShown:
            return
        prompt = interpolate(cell, self.shell.user_ns if self.shell else {}).strip()
        if not prompt:
            raise UsageError("%%lumen: the cell is empty; write a prompt below the magic line")
        note = None
        previous = self.conversation.model
        if args.new:
            self.conversation.restart()
        elif args.model and previous and args.model != previous and not args.keep:
            # Earlier cells were written for another model: never send them to this one.
            self.conversation.restart()
            note = f"new conversation (the last one was with {previous}; --continue keeps it)"
        if args.system is not None:
            self.conversation.system = args.system or None

        def run() -> None:
            client = self.client
            model = (
                args.model
                or self.conversation.model
                or self.default_model
                or client.default_model()
            )
            temperature = args.temperature if args.temperature is not None else self.temperature
            runner = ChatRunner(
                client,
                self.conversation,
                ipython_publisher,
                interval=self.stream_interval,
                terminal=self.terminal,
            )
            request = ChatRequest(
                prompt, model, args.max_tokens or self.max_tokens or None, temperature, note
            )
            error = runner.run(request)  # shows its own error line
            if error is not None and self.raise_errors:
                raise error

        self._run(run)


def headless_key_advice(created: dict[str, Any]) -> str:
    """What a headless run shows instead of a new key."""
    name = created.get("name") or "(unnamed)"
    key_id = created.get("id")
    return (
        f"API key '{name}' (id {key_id}, {created.get('hint')}) was created, but this "
        "notebook is run without a front end (nbclient, nbconvert, papermill), so its value "
        "is not shown: the notebook would keep it. Use `%lumen keys new NAME --save FILE` "
        "to write a key to a file readable by you only; revoke this one with "
        f"`%lumen keys revoke {key_id}`."
    )


def _matplotlib_chart(history: dict[str, Any], metric: str) -> Any:
    """A stacked bar chart as a PNG image, or ``None`` without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    from IPython.core.display import Image

    from ..display.usage_views import metric_value

    series = list(history.get("series") or [])
    buckets = history.get("buckets") or []
    labels = [str(b.get("start")) for b in buckets]
    figure = Figure(figsize=(8, 3.2), layout="constrained")
    axes = figure.add_subplot()
    bottoms = [0.0] * len(buckets)
    for name in series:
        values = [metric_value((b.get("values") or {}).get(name) or {}, metric) for b in buckets]
        axes.bar(labels, values, bottom=bottoms, label=name)
        bottoms = [a + b for a, b in zip(bottoms, values, strict=True)]
    axes.set_ylabel(metric)
    axes.set_title(
        f"{metric.capitalize()} per {history.get('bucket')} by {history.get('group_by')}"
    )
    axes.tick_params(axis="x", labelrotation=45, labelsize=7)
    if series:
        axes.legend(fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return Image(data=buffer.getvalue(), format="png")


_loaded: dict[int, LumenMagics] = {}


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext lumen_jupyter``: register the magics and the one-time-display hook."""
    if id(ipython) in _loaded:
        return
    magics = LumenMagics(shell=ipython)
    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", magics.one_time.hide_all)
    _loaded[id(ipython)] = magics


def unload_ipython_extension(ipython: Any) -> None:
    magics = _loaded.pop(id(ipython), None)
    if magics is None:
        return
    magics.one_time.hide_all()
    ipython.events.unregister("pre_run_cell", magics.one_time.hide_all)
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("lumen", None)
    if magics in ipython.configurables:
        ipython.configurables.remove(magics)
    magics.close()
