"""Take secrets out of text before it leaves the server: errors, logs, relayed messages.

Two kinds of secret are masked:

* the ones this server knows literally - every upstream ``api_key`` of the
  catalog and the credentials it gives its kernels - registered with
  :meth:`Redactor.add` and masked wherever they appear, whatever their shape;
* anything shaped like a well-known credential (OpenAI, Anthropic, Google,
  Groq, xAI, Hugging Face, GitHub, AWS, our own ``sk_`` and ``lkt_``, and
  ``Bearer`` tokens), so that a key this server was never told about is masked
  too.

The module has no HTTP dependencies: the gateway, the request log and the
logging filter all call the same :func:`redact`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

MASK = "[redacted]"
MIN_LITERAL = 8
"""Shorter configured values are not masked literally (they would mask ordinary words)."""

_TOKEN = r"[A-Za-z0-9_\-]"
_MASKED_TOKEN = r"[A-Za-z0-9_\-*.]"  # providers echo keys partly starred: sk-ab***yz
_SHAPES = [
    r"sk-(?:proj-|ant-(?:api\d\d-)?)?" + _MASKED_TOKEN + r"{8,}",  # OpenAI, Anthropic
    r"sk_" + _TOKEN + r"{8,}",  # our personal keys
    r"lkt_" + _TOKEN + r"{8,}",  # our kernel credentials
    r"AIza" + _TOKEN + r"{20,}",  # Google
    r"gsk_[A-Za-z0-9]{16,}",  # Groq
    r"xai-[A-Za-z0-9]{16,}",  # xAI
    r"hf_[A-Za-z0-9]{16,}",  # Hugging Face
    r"gh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{20,}",  # GitHub fine-grained tokens
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",  # AWS access key ids
    r"key[-_]" + _MASKED_TOKEN + r"{6,}",  # generic "key-…" / "key_…"
]
_SHAPED = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(_SHAPES) + r")", re.IGNORECASE)
_BEARER = re.compile(r"(?i)\b(bearer|token)(\s+|=|:\s*)[A-Za-z0-9._~+/\-]{8,}=*")


class Redactor:
    """Masks registered literals and well-known key shapes; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._literals: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these values from now on (values shorter than ``MIN_LITERAL`` are ignored)."""
        with self._lock:
            before = len(self._literals)
            self._literals.update(s for s in secrets if s and len(s) >= MIN_LITERAL)
            if len(self._literals) != before:
                self._compile()

    def discard(self, secret: str) -> None:
        """Stop masking ``secret`` literally (a revoked credential's shape is still masked)."""
        with self._lock:
            if secret in self._literals:
                self._literals.discard(secret)
                self._compile()

    def _compile(self) -> None:
        ordered = sorted(self._literals, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced by ``[redacted]``."""
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        text = _SHAPED.sub(MASK, text)
        return _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


redact = Redactor()
"""The process-wide redactor: the server registers its secrets here at start-up."""


SAFE_QUERY_PARAMETERS = frozenset(
    {"period", "bucket", "group_by", "include_revoked", "since", "model", "metric"}
)
"""Query parameters of lumen routes whose values are logged as they are."""


def redact_uri(uri: str) -> str:
    """A request URI fit for a log: every query value except known harmless ones hidden."""
    parts = urlsplit(uri)
    if not parts.query:
        return redact(uri)
    pairs = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        shown = redact(value) if name in SAFE_QUERY_PARAMETERS else "[secret]"
        pairs.append(f"{quote(name, safe='')}={quote(shown, safe='[]')}")
    return redact(urlunsplit(parts._replace(query="&".join(pairs))))


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in a record's message and traceback.

    Attach it to handlers (a filter on a logger sees only the records made on that
    very logger, not those its children pass up).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it as usual
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


FILTER = RedactingFilter()


def install_log_filter(loggers: Iterable[logging.Logger]) -> None:
    """Put the redacting filter on these loggers and on every handler they write to."""
    for logger in loggers:
        if FILTER not in logger.filters:
            logger.addFilter(FILTER)
        current: logging.Logger | None = logger
        while current is not None:
            for handler in current.handlers:
                if FILTER not in handler.filters:
                    handler.addFilter(FILTER)
            if not current.propagate:
                break
            current = current.parent
