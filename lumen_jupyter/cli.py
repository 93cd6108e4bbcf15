"""``jupyter lumen``: the administrator's command for coin pools, keys and usage.

Why it exists: the server's REST API only ever acts for the signed-in user, so
nothing in it lets an administrator grant coins, give someone a pool, revoke a
leaked key or look at another person's spending.  This command does, through the
same :class:`~lumen_jupyter.core.service.LumenService` and the same database as
the server - and it is safe while the server runs: every write is one short
transaction (SQLite in WAL mode queues writers; PostgreSQL needs nothing).

The database is ``--db``, else ``LUMEN_DATABASE_URL``, else the YAML's
``app.database.url``, else the server's default SQLite file in the Jupyter data dir.
Pools resolve from ``--config``, else ``LUMEN_CONFIG``, else the embedded default -
the way the server resolves them.
Bad input is one line on stderr and exit code 2; a database failure is exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from . import cli_format as fmt
from ._version import __version__
from .cli_check import check_config
from .cli_remote import RemoteError, run_remote
from .core.accounts import Identity
from .core.catalog import Catalog, PoolSpec
from .core.clock import isoformat_z
from .core.config import load_config_file, parse_pool, resolve_database_url
from .core.defaults import embedded_default
from .core.errors import BadRequest, LumenError
from .core.money import coins_to_micro, format_coins
from .core.pools import compute_refill
from .core.service import LumenService, coins_json
from .core.usage import GROUPINGS, PERIODS
from .store import Store, sqlite_url
from .store.schema import accounts, balances, usage_stats

PROG = "jupyter lumen"
DEMO_URL = "http://127.0.0.1:0/v1"
"""Where the embedded default's demo models point; the CLI never calls them."""
MAX_COINS = Decimal(10) ** 12
"""Largest amount accepted, far below what a BIGINT of micro-coins can hold."""
NOTE_LENGTH = 255


class UsageError(Exception):
    """Bad input: reported as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


@dataclass
class Admin:
    """An open store and the service over it, for one command."""

    store: Store
    service: LumenService
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Users' groups known besides the YAML's memberships (a hub's, when the service
    runs the command); pools and model rules follow them."""

    def identity(self, username: str, *, create: bool = False) -> Identity:
        """The user, who must have an account unless ``create``."""
        if not create and self.service.known_account(username) is None:
            raise UsageError(
                f"no account named {username!r} (accounts appear on a user's first use; "
                "see: jupyter lumen users)"
            )
        self.service.account(username)
        # Groups granted by a server's own ``c.LumenJupyter.groups`` are unknown here;
        # memberships written in the YAML configuration apply.
        return Identity(
            username=username, display_name=username, groups=self.groups.get(username, frozenset())
        )


Output = tuple[Any, str]
"""What a command prints: JSON-ready data for ``--json`` and the text otherwise."""


# -- input ----------------------------------------------------------------------------------


def coin_amount(text: str) -> Decimal:
    """An argparse type: a coin amount with at most six decimals."""
    try:
        value = Decimal(text.strip().replace("_", ""))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a coin amount: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a coin amount: {text!r}")
    if abs(value) > MAX_COINS:
        raise argparse.ArgumentTypeError(f"{text} coins is too large")
    if value != value.quantize(Decimal("0.000001")):
        raise argparse.ArgumentTypeError(f"{text}: coins have at most six decimals")
    return value


def key_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise argparse.ArgumentTypeError(f"a key id is a whole number (got {text!r})")
    return int(text)


def database_url(given: str | None, config: str | None = None) -> str:
    """``--db``, else ``LUMEN_DATABASE_URL``, else the YAML's ``app.database.url``, else
    the server's default SQLite file - the order the server follows."""
    url = given or os.environ.get("LUMEN_DATABASE_URL", "") or _yaml_database_url(config)
    if not url:
        from jupyter_core.paths import jupyter_data_dir

        url = sqlite_url(Path(jupyter_data_dir()) / "lumen" / "lumen.db")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"not a database URL: {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path not in ("", ":memory:") and not Path(path).is_file():
            raise UsageError(
                f"no database at {path}: start Jupyter with lumen-jupyter once, "
                "or name it with --db URL"
            )
    return url


def _yaml_database_url(config: str | None) -> str:
    path = config or os.environ.get("LUMEN_CONFIG", "")
    if not path:
        return ""
    file = Path(path).expanduser()
    url = load_config_file(file).database_url
    return resolve_database_url(url, file.parent) if url else ""


def load_catalog(config: str | None) -> Catalog:
    """The catalog the server would build: the embedded default unless a file names models."""
    path = config or os.environ.get("LUMEN_CONFIG", "")
    if not path:
        return embedded_default(DEMO_URL)
    file = Path(path).expanduser()
    base = embedded_default(DEMO_URL) if not load_config_file(file).models else Catalog()
    return load_config_file(file, base=base)


@contextmanager
def open_admin(args: argparse.Namespace) -> Iterator[Admin]:
    url = database_url(getattr(args, "db", None), getattr(args, "config", None))
    catalog = load_catalog(getattr(args, "config", None))
    try:
        store = Store(url, pool_size=1)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except ImportError as exc:
        raise UsageError(f"{exc}; for PostgreSQL: pip install 'lumen-jupyter[postgres]'") from None
    try:
        store.migrate()
        # No secret: the CLI never creates or looks up a key by its raw value.
        yield Admin(store, LumenService(store, catalog, secret=b""))
    finally:
        store.dispose()


def check_args(args: argparse.Namespace) -> None:
    """What argparse cannot check alone, before the database is opened."""
    if args.command == "grant":
        if args.coins == 0:
            raise UsageError(f"{PROG} grant: COINS must not be 0")
        if args.note is not None and len(args.note.strip()) > NOTE_LENGTH:
            raise UsageError(f"{PROG} grant: --note has at most {NOTE_LENGTH} characters")
    if args.command == "pool":
        if args.max is None and (args.refresh is not None or args.starting is not None):
            raise UsageError(f"{PROG} pool: --refresh and --starting need --max")
        if args.max is not None and args.clear:
            raise UsageError(f"{PROG} pool: give either --max or --clear, not both")
        if args.refresh is not None and args.refresh < 0:
            raise UsageError(f"{PROG} pool: --refresh must not be negative")


# -- commands -------------------------------------------------------------------------------


def cmd_grant(admin: Admin, args: argparse.Namespace) -> Output:
    micro = coins_to_micro(args.coins)
    note = args.note.strip() if args.note else None
    who = admin.identity(args.user, create=args.create)
    try:
        state = admin.service.grant(who, micro, note)
    except BadRequest as exc:
        raise UsageError(
            f"{exc.message}; to keep one, give them a limited pool: "
            f"{PROG} pool {fmt.clean(args.user)} --max COINS"
        ) from None
    verb = "granted" if micro > 0 else "took away"
    text = (
        f"{fmt.clean(args.user)}: {verb} {fmt.coins(abs(micro))} coins; "
        f"balance now {state['balance']['text']} coins (max {state['max']['text']})"
    )
    if state["balance"]["micro"] < 0:
        text += ", in debt"
    data = {"user": args.user, "amount": coins_json(micro), "note": note, "pool": state}
    return data, text


def cmd_pool(admin: Admin, args: argparse.Namespace) -> Output:
    changing = args.max is not None or args.clear
    who = admin.identity(args.user, create=args.create and changing)
    notes: list[str] = []
    if args.clear:
        admin.service.set_user_pool(args.user, None)
        notes.append(f"{fmt.clean(args.user)}: own pool removed")
    elif args.max is not None:
        entry: dict[str, Decimal] = {"max": args.max}
        if args.refresh is not None:
            entry["refresh"] = args.refresh
        if args.starting is not None:
            entry["starting"] = args.starting
        try:
            spec = parse_pool(entry, "pool")
        except LumenError as exc:
            raise UsageError(f"{PROG} pool: {exc.message.replace('pool.', '--')}") from None
        had_balance = _has_balance(admin, args.user)
        admin.service.set_user_pool(args.user, spec)
        notes.append(f"{fmt.clean(args.user)}: own pool set")
        if had_balance and not spec.unlimited:
            notes.append("  (starting applies to a new balance only; use grant to change it)")
            notes.extend(_above_max_note(admin, who, spec, clamp=args.clamp))
    state = admin.service.pool_state(who)
    own = _own_pool(admin, who)
    text = "\n".join([*notes, fmt.pool_text(args.user, state, own)])
    return {"user": args.user, "own_pool": own, "pool": state}, text


def _above_max_note(admin: Admin, who: Identity, spec: PoolSpec, *, clamp: bool) -> list[str]:
    """What happens to a balance above a lowered max: kept (refills never lower a
    balance) unless ``--clamp`` lowers it now."""
    if clamp:
        taken = admin.service.clamp_to_max(who)
        if not taken:
            return []
        return [f"  (balance lowered to the max: {format_coins(taken)} coins taken)"]
    state = admin.service.pool_state(who)
    balance = state.get("balance", {}).get("micro")
    if spec.max_micro is None or balance is None or balance <= spec.max_micro:
        return []
    return [
        f"  (the balance of {format_coins(balance)} coins is above the new max: it is kept "
        "until spent, and refills resume below the max; --clamp lowers it now)"
    ]


def _has_balance(admin: Admin, username: str) -> bool:
    acct = admin.service.account(username)
    with admin.store.read() as conn:
        row = conn.execute(select(balances.c.account_id).where(balances.c.account_id == acct))
        return row.first() is not None


def _own_pool(admin: Admin, who: Identity) -> dict[str, Any] | None:
    acct = admin.service.account(who.username)
    with admin.store.read() as conn:
        resolved = admin.service.resolve_pool(conn, who, acct)
    if resolved is None or resolved.source != "user":
        return None
    return _pool_json(resolved.spec)


def _pool_json(spec: PoolSpec) -> dict[str, Any]:
    return {
        "max": None if spec.max_micro is None else coins_json(spec.max_micro),
        "refresh": coins_json(spec.refresh_micro),
        "starting": coins_json(spec.starting_micro),
    }


def cmd_keys(admin: Admin, args: argparse.Namespace) -> Output:
    who = admin.identity(args.user)
    keys = admin.service.list_keys(who, include_revoked=args.all)
    return {"user": args.user, "keys": keys}, fmt.keys_text(args.user, keys)


def cmd_revoke(admin: Admin, args: argparse.Namespace) -> Output:
    who = admin.identity(args.user)
    known = {k["id"]: k for k in admin.service.list_keys(who, include_revoked=True)}
    try:
        outcome = admin.service.revoke_key(who, args.key_id)
    except LumenError as exc:
        raise UsageError(f"{fmt.clean(args.user)}: {exc.message}") from None
    key = known.get(args.key_id)
    label = f"key {args.key_id}"
    if key is not None:
        label += f" ({fmt.clean(key['name'])}, {key['hint']})"
    text = f"{fmt.clean(args.user)}: {label} {outcome}"
    return {"user": args.user, "key_id": args.key_id, "result": outcome}, text


def cmd_new_key(admin: Admin, args: argparse.Namespace) -> Output:
    """A personal key for USER, shown once: to hand to them, or for the admin's own use."""
    if not admin.service.secret:
        raise UsageError(
            f"{PROG} new-key: keys are made by the service that holds the key secret; "
            "run it with --url URL"
        )
    who = admin.identity(args.user, create=args.create)
    try:
        created = admin.service.create_key(
            who, args.name, budget=args.budget, expires_in=args.expires_in
        )
    except LumenError as exc:
        raise UsageError(f"{PROG} new-key: {exc.message}") from None
    text = (
        f"{fmt.clean(args.user)}: key {created['id']} ({fmt.clean(created['name'])}) created; "
        f"it is shown this once:\n{created['key']}"
    )
    return {"user": args.user, "key": created}, text


def cmd_usage(admin: Admin, args: argparse.Namespace) -> Output:
    who = admin.identity(args.user)
    history = admin.service.usage_history(who, args.period, None, args.by)
    return {"user": args.user, **history}, fmt.usage_text(args.user, history)


def cmd_users(admin: Admin, args: argparse.Namespace) -> Output:
    users = list_users(admin)
    return {"users": users}, fmt.users_text(users)


def list_users(admin: Admin) -> list[dict[str, Any]]:
    """Every account with its pool and balance, read without writing anything.

    A refill that is due shows as already applied (it is, the next time the user
    or ``pool USER`` looks); a balance not opened yet shows its starting value.
    """
    service = admin.service
    now = service.clock.now()
    used = (
        select(
            usage_stats.c.account_id,
            func.sum(usage_stats.c.requests).label("requests"),
            func.sum(usage_stats.c.coins_micro).label("coins_micro"),
            func.max(usage_stats.c.last_used_at).label("last_used_at"),
        )
        .group_by(usage_stats.c.account_id)
        .subquery()
    )
    query = (
        select(
            accounts.c.id,
            accounts.c.username,
            balances.c.balance_micro,
            balances.c.last_refill_at,
            used.c.requests,
            used.c.coins_micro,
            used.c.last_used_at,
        )
        .select_from(
            accounts.outerjoin(balances, balances.c.account_id == accounts.c.id).outerjoin(
                used, used.c.account_id == accounts.c.id
            )
        )
        .order_by(accounts.c.username)
    )
    result = []
    with admin.store.read() as conn:
        for row in conn.execute(query).all():
            name = str(row.username)
            who = Identity(
                username=name, display_name=name, groups=admin.groups.get(name, frozenset())
            )
            resolved = service.resolve_pool(conn, who, int(row.id))
            entry: dict[str, Any] = {
                "username": who.username,
                "state": "none",
                "source": None if resolved is None else resolved.source,
                "requests": int(row.requests or 0),
                "coins_used": coins_json(int(row.coins_micro or 0)),
                "last_used_at": isoformat_z(row.last_used_at),
            }
            spec = None if resolved is None else resolved.spec
            if spec is not None:
                entry["state"] = (
                    "unlimited" if spec.unlimited else "blocked" if spec.blocked else "limited"
                )
            if spec is not None and spec.max_micro is not None:
                balance = spec.starting_micro
                if row.balance_micro is not None:
                    balance = int(row.balance_micro)
                    refill = compute_refill(balance, row.last_refill_at, now, spec)
                    balance = balance if refill is None else refill.new_balance
                entry["balance"] = coins_json(balance)
                entry["max"] = coins_json(spec.max_micro)
                entry["refresh_per_hour"] = coins_json(spec.refresh_micro)
            result.append(entry)
    return result


def cmd_check_config(admin: Admin | None, args: argparse.Namespace) -> Output:
    return check_config(args.file)


# -- wiring ---------------------------------------------------------------------------------

Handler = Callable[[Admin, argparse.Namespace], Output]


def build_parser() -> _Parser:
    common = _Parser(add_help=False)
    # SUPPRESS: an option given before the command is not reset by the command's parser.
    common.add_argument("--db", metavar="URL", default=argparse.SUPPRESS, help="database URL")
    common.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS, help="Lumen-style YAML file"
    )
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    common.add_argument(
        "--url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="run the command on a lumen service (its admin API) instead of a database",
    )
    common.add_argument(
        "--token-file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="the service's admin token (default: $LUMEN_ADMIN_TOKEN_FILE, else "
        "<jupyter data dir>/lumen/admin_token)",
    )
    parser = _Parser(
        prog=PROG,
        parents=[common],
        description="Administer lumen-jupyter: coin pools, grants, keys and usage. "
        "Safe to run while the server is running.",
        epilog="Database: --db, else $LUMEN_DATABASE_URL, else the YAML's app.database.url, "
        "else <jupyter data dir>/lumen/lumen.db. "
        "Configuration: --config, else $LUMEN_CONFIG, else the embedded default. "
        "With --url, the command runs on a lumen service instead. "
        "'jupyter lumen serve --help': the standalone service.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Handler, summary: str) -> _Parser:
        sub: _Parser = commands.add_parser(
            name, parents=[common], help=summary, description=summary
        )
        sub.set_defaults(handler=handler)
        return sub

    create = "create the account if USER has not used Lumen yet"
    grant = command("grant", cmd_grant, "add coins to a balance (negative COINS takes them away)")
    grant.add_argument("user", metavar="USER")
    grant.add_argument("coins", metavar="COINS", type=coin_amount)
    grant.add_argument("--note", metavar="TEXT", help="why; kept in the ledger")
    grant.add_argument("--create", action="store_true", help=create)

    pool = command("pool", cmd_pool, "show a user's pool, or set or clear their own pool")
    pool.add_argument("user", metavar="USER")
    pool.add_argument("--max", type=coin_amount, help="-2 unlimited, 0 blocked, else coins")
    pool.add_argument("--refresh", type=coin_amount, help="coins added per hour (default 0)")
    pool.add_argument("--starting", type=coin_amount, help="opening balance (default --max)")
    pool.add_argument("--clear", action="store_true", help="remove the user's own pool")
    pool.add_argument(
        "--clamp",
        action="store_true",
        help="lower a balance above the new max to the max (else it is kept until spent)",
    )
    pool.add_argument("--create", action="store_true", help=create)

    keys = command("keys", cmd_keys, "list a user's personal keys (hints only)")
    keys.add_argument("user", metavar="USER")
    keys.add_argument("--all", action="store_true", help="include revoked keys")

    revoke = command("revoke", cmd_revoke, "revoke a user's key at once")
    revoke.add_argument("user", metavar="USER")
    revoke.add_argument("key_id", metavar="KEY_ID", type=key_id, help="the ID column of keys")

    new_key = command(
        "new-key", cmd_new_key, "create a personal key for a user (on a service, with --url)"
    )
    new_key.add_argument("user", metavar="USER")
    new_key.add_argument("name", metavar="NAME")
    new_key.add_argument("--budget", metavar="COINS", help="the most the key may spend")
    new_key.add_argument("--expires-in", metavar="DURATION", help="e.g. 7d, 12h")
    new_key.add_argument("--create", action="store_true", help=create)

    usage = command("usage", cmd_usage, "a user's usage over a period")
    usage.add_argument("user", metavar="USER")
    usage.add_argument("--period", choices=list(PERIODS), default="month")
    usage.add_argument("--by", choices=list(GROUPINGS), default="model")

    command("users", cmd_users, "every account with its pool and balance")

    check = command(
        "check-config",
        cmd_check_config,
        "validate a YAML file (ours or Lumen's) and print the policy it resolves to",
    )
    check.add_argument("file", metavar="FILE")
    return parser


LOCAL_OPTIONS = frozenset({"db", "config", "json", "url", "token_file", "help"})
"""Options about where a command runs, never taken from a request's fields."""
_TRUE = frozenset({"1", "true", "yes", "on"})


def _command_parser(command: str) -> _Parser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]  # type: ignore[no-any-return]
    raise UsageError(f"{PROG}: no command {command!r}")


def parse_fields(command: str, fields: dict[str, Any]) -> argparse.Namespace:
    """A command given as named fields (the admin API's request), parsed and checked
    exactly as its command line would be."""
    options: list[str] = []
    positionals: list[str] = []
    rest = dict(fields)
    for action in _command_parser(command)._actions:
        if action.dest in LOCAL_OPTIONS or action.dest not in rest:
            if not action.option_strings and action.dest not in LOCAL_OPTIONS:
                raise UsageError(f"{command}: the field '{action.dest}' is required")
            continue
        value = rest.pop(action.dest)
        if isinstance(action, argparse._StoreTrueAction):
            if value is True or (isinstance(value, str) and value.lower() in _TRUE):
                options.append(action.option_strings[0])
            elif value not in (False, None, "", "0", "false", "no", "off"):
                raise UsageError(f"{command}: the field '{action.dest}' is true or false")
        elif value is None:
            continue
        elif not isinstance(value, (str, int)) or isinstance(value, bool):
            raise UsageError(f"{command}: the field '{action.dest}' is a string or a number")
        elif action.option_strings:
            options += [action.option_strings[0], str(value)]
        else:
            positionals.append(str(value))
    if rest:
        raise UsageError(f"{command}: unknown field(s): {', '.join(sorted(rest))}")
    separator = ["--"] if positionals else []  # a negative amount is not an option
    args = build_parser().parse_args([command, *options, *separator, *positionals])
    check_args(args)
    return args


def fields_of(args: argparse.Namespace) -> dict[str, Any]:
    """The fields of a parsed command, for the admin API (the inverse of :func:`parse_fields`)."""
    fields: dict[str, Any] = {}
    for action in _command_parser(args.command)._actions:
        if action.dest in LOCAL_OPTIONS or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value is None or value is False:
            continue
        fields[action.dest] = value if isinstance(value, (bool, int)) else str(value)
    return fields


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 database failure, 2 bad input)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["serve"]:
        from .service.app import main as serve

        return serve(arguments[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
        if getattr(args, "handler", None) is None:
            parser.error(
                "choose a command: grant, pool, keys, new-key, revoke, usage, users, "
                "check-config "
                "(or --help)"
            )
        check_args(args)
        if args.command == "check-config":  # needs no database
            data, text = cmd_check_config(None, args)
        elif getattr(args, "url", None):
            data, text = run_remote(args, fields_of(args))
        else:
            with open_admin(args) as admin:
                data, text = args.handler(admin, args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except RemoteError as exc:
        return _fail(str(exc), exc.exit_code)
    except UsageError as exc:
        return _fail(str(exc), 2)
    except LumenError as exc:  # a configuration error or a refusal from the service
        return _fail(exc.message, 2)
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        return _fail(f"database error: {reason}", 1)
    except OSError as exc:
        return _fail(str(exc), 1)
    _write(json.dumps(data, indent=2) if getattr(args, "json", False) else text)
    return 0


def _fail(message: str, code: int) -> int:
    line = fmt.clean(message.splitlines()[0] if message else "failed")
    if not line.startswith(PROG):
        line = f"{PROG}: {line}"
    print(line, file=sys.stderr)
    return code


def _write(text: str) -> None:
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. ``jupyter lumen users | head``
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    raise SystemExit(main())
