"""Model answers as Markdown that cannot run code or leak data when rendered.

Outputs produced during a session are *trusted* in JupyterLab: raw HTML in a
Markdown output is not sanitized.  A model's answer is untrusted text (a prompt
injection can make it write anything), so before it is shown as Markdown:

* ``<`` and ``&`` outside code are escaped, so no HTML tag or entity survives;
* images become plain links (``![x](url)`` would load ``url`` at once, a known
  way to send a conversation to someone else's server);
* ``javascript:``, ``vbscript:``, ``data:`` and ``file:`` link targets are cut.

Code blocks and code spans are left exactly as written: Markdown shows their
content as text already.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:.+?)(?<!`)\1(?!`)", re.DOTALL)
_BAD_LINK = re.compile(r"\]\(\s*(?:javascript|vbscript|data|file)\s*:", re.IGNORECASE)
_BAD_REFERENCE = re.compile(
    r"^([ ]{0,3}\[[^\]]+\]:\s*)(?:javascript|vbscript|data|file)\s*:", re.IGNORECASE | re.MULTILINE
)


def _neutralize_text(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    text = text.replace("![", "[")
    text = _BAD_LINK.sub("](#", text)
    return _BAD_REFERENCE.sub(r"\1#", text)


def _neutralize_inline(text: str) -> str:
    """Escape everything outside inline code spans."""
    out: list[str] = []
    last = 0
    for span in _CODE_SPAN.finditer(text):
        out.append(_neutralize_text(text[last : span.start()]))
        out.append(span.group(0))
        last = span.end()
    out.append(_neutralize_text(text[last:]))
    return "".join(out)


def _closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a block opened by ``fence`` (same char, at least as long)."""
    closing = _FENCE.match(line)
    if closing is None:
        return False
    run = closing.group(1)
    return run[0] == fence[0] and len(run) >= len(fence) and not line.strip().strip(fence[0])


def safe_markdown(text: str) -> str:
    """``text`` with HTML, images and script links made inert outside code."""
    out: list[str] = []
    prose: list[str] = []
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        opened = _FENCE.match(line)
        if fence is None:
            if opened:
                out.append(_neutralize_inline("".join(prose)))
                prose = []
                fence = opened.group(1)
                out.append(line)
            else:
                prose.append(line)
            continue
        out.append(line)
        if _closes(line, fence):
            fence = None
    out.append(_neutralize_inline("".join(prose)))
    return "".join(out)
