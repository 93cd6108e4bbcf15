"""Argument parsing for ``%lumen`` and ``%%lumen``, and ``{name}`` interpolation.

Parse errors raise IPython's ``UsageError``, which IPython prints as one line
(``UsageError: …``) without a traceback.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from IPython.core.error import UsageError

COMMANDS = (
    "help",
    "profile",
    "balance",
    "keys",
    "models",
    "consent",
    "usage",
    "estimate",
    "status",
)


class HelpShown(Exception):
    """``-h`` was given: argparse printed the help; nothing else to do."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}. See `%lumen help`.")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(message.strip())
        raise HelpShown()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 2.0:
        raise argparse.ArgumentTypeError(f"{text} is outside 0..2")
    return value


def line_parser() -> _Parser:
    parser = _Parser(prog="%lumen", add_help=False)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    sub.add_parser("help", help="list the commands")
    sub.add_parser("profile", help="the profile dashboard as HTML/text")
    sub.add_parser("balance", help="coins available and the next refill")
    sub.add_parser("status", help="the gateway and credential in use")

    keys = sub.add_parser("keys", prog="%lumen keys", help="API keys")
    keys.add_argument("--all", action="store_true", help="include revoked keys")
    key_actions = keys.add_subparsers(dest="action", parser_class=_Parser, metavar="ACTION")
    new = key_actions.add_parser("new", prog="%lumen keys new", help="create a key")
    new.add_argument("name", metavar="NAME", help="a name for the key")
    new.add_argument(
        "--save", metavar="FILE", help="write the key to FILE (mode 600) instead of showing it"
    )
    new.add_argument("--budget", metavar="COINS", help="the most the key may spend, in coins")
    new.add_argument(
        "--expires", metavar="WHEN", help="a lifetime (7d, 12h, 30m) or an ISO 8601 time"
    )
    revoke = key_actions.add_parser("revoke", prog="%lumen keys revoke", help="revoke a key")
    revoke.add_argument("key", metavar="ID", help="the key's id (or its name)")

    models = sub.add_parser("models", prog="%lumen models", help="models and access")
    models.add_argument("name", nargs="?", metavar="NAME", help="show one model in detail")
    models.add_argument("--filter", metavar="TEXT", help="only names containing TEXT")
    models.add_argument("--all", action="store_true", help="include disabled and blocked models")

    consent = sub.add_parser("consent", prog="%lumen consent", help="accept a model's notice")
    consent.add_argument("model", metavar="MODEL")
    consent.add_argument("--accept", action="store_true", help="accept without asking")

    usage = sub.add_parser("usage", prog="%lumen usage", help="spending history")
    usage.add_argument("--period", choices=["week", "month", "year", "all"], default="month")
    usage.add_argument(
        "--by", choices=["model", "notebook", "cell", "key", "source"], default="model"
    )
    usage.add_argument(
        "--notebook", default=None, help="with --by cell: that notebook's path (default: this one)"
    )
    usage.add_argument("--bucket", choices=["day", "week", "month"], default=None)
    usage.add_argument("--metric", choices=["coins", "tokens", "requests"], default="coins")
    usage.add_argument("--plot", action="store_true", help="draw a chart")

    estimate = sub.add_parser("estimate", prog="%lumen estimate", help="worst-case coins")
    estimate.add_argument("model", metavar="MODEL")
    estimate.add_argument("prompt", nargs="+", metavar="PROMPT")
    estimate.add_argument("--max-tokens", type=_positive_int, default=None)
    return parser


def chat_parser() -> _Parser:
    parser = _Parser(prog="%%lumen", add_help=True)
    parser.add_argument("-m", "--model", default=None, help="the model to ask")
    parser.add_argument("--system", default=None, help="a system prompt for the conversation")
    parser.add_argument("--max-tokens", type=_positive_int, default=None)
    parser.add_argument("--temperature", type=_temperature, default=None)
    parser.add_argument("--new", action="store_true", help="start a new conversation")
    parser.add_argument(
        "--continue",
        dest="keep",
        action="store_true",
        help="keep the conversation when -m names another model than its own",
    )
    return parser


def split_line(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%lumen: cannot read the arguments ({exc}); check the quotes") from None


def parse(parser: _Parser, words: Sequence[str]) -> argparse.Namespace:
    first = words[0] if words else ""
    if parser.prog == "%lumen" and first and first not in COMMANDS and first[0] != "-":
        raise UsageError(
            f"%lumen: unknown command {first!r}; commands: {', '.join(COMMANDS)}. "
            "See `%lumen help`."
        )
    return parser.parse_args(list(words))


_FIELD = re.compile(r"\{\{([A-Za-z_][\w.]*)\}\}|\{([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\}")


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    """Replace ``{name}`` (or ``{name.attr}``) by the value of a variable.

    Names that are not defined are left as written, so code with braces passes
    through; ``{{name}}`` is written as a literal ``{name}``.
    """

    def substitute(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return "{" + match.group(1) + "}"
        first, *rest = match.group(2).split(".")
        if first not in namespace:
            return match.group(0)
        value = namespace[first]
        for attribute in rest:
            try:
                value = getattr(value, attribute)
            except AttributeError:
                return match.group(0)
        return str(value)

    return _FIELD.sub(substitute, text)
