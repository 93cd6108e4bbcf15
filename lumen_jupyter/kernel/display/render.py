"""Small output objects that read well in a notebook and in a terminal.

Each :class:`View` has ``_repr_mimebundle_`` with ``text/plain`` (aligned text for
terminals and logs) and ``text/html`` (or ``text/markdown``) for notebooks.  All
text that comes from a server or a model is HTML-escaped here.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

_BORDER = "var(--jp-border-color2, #e0e0e0)"
_MUTED = "var(--jp-ui-font-color2, #757575)"
_LEVELS = {
    "info": ("i", "var(--jp-info-color1, #0288d1)"),
    "ok": ("✓", "var(--jp-success-color1, #388e3c)"),
    "warn": ("!", "var(--jp-warn-color1, #f57c00)"),
    "error": ("✗", "var(--jp-error-color1, #d32f2f)"),
}
_CODE = re.compile(r"`([^`]+)`")


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def inline_html(text: str) -> str:
    """Escape ``text`` and show `backticked` parts as code."""
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", esc(text))


def fmt_int(value: Any) -> str:
    return f"{int(value or 0):,}"


def fmt_time(iso: str | None) -> str:
    """An ISO time as ``2026-03-04 12:00 UTC``; ``—`` when there is none."""
    if not iso:
        return "—"
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return iso
    return f"{when:%Y-%m-%d %H:%M} UTC"


class View:
    """Base: subclasses give ``text()`` and ``html()``."""

    def text(self) -> str:
        raise NotImplementedError

    def html(self) -> str:
        return f"<pre>{esc(self.text())}</pre>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.text(), "text/html": self.html()}

    def __str__(self) -> str:
        return self.text()


@dataclass
class Notice(View):
    """One line: information, success, warning or error (text may use `code`)."""

    message: str
    level: str = "info"

    def text(self) -> str:
        symbol = _LEVELS.get(self.level, _LEVELS["info"])[0]
        return f"{symbol} {self.message}"

    def html(self) -> str:
        symbol, color = _LEVELS.get(self.level, _LEVELS["info"])
        return (
            f'<div class="lumen-notice lumen-{esc(self.level)}" style="border-left:3px solid '
            f'{color};padding:2px 8px;margin:2px 0"><b style="color:{color}">{esc(symbol)}</b> '
            f"{inline_html(self.message)}</div>"
        )


@dataclass
class Cell:
    """A table cell: plain text, and optional HTML (already safe) for notebooks."""

    text: str
    html: str | None = None

    def as_html(self) -> str:
        return self.html if self.html is not None else esc(self.text)


CellLike = Cell | str | int | None


def _cell(value: CellLike) -> Cell:
    if isinstance(value, Cell):
        return value
    return Cell("—" if value is None else str(value))


@dataclass
class Table(View):
    """A titled table; numeric columns (``right``) are right-aligned."""

    columns: Sequence[str]
    rows: Sequence[Sequence[CellLike]]
    title: str | None = None
    right: frozenset[str] = frozenset()
    struck: frozenset[int] = frozenset()
    note: str | None = None
    empty: str = "Nothing to show."

    def _cells(self) -> list[list[Cell]]:
        return [[_cell(v) for v in row] for row in self.rows]

    def text(self) -> str:
        cells = self._cells()
        lines = [self.title] if self.title else []
        if not cells:
            lines.append(self.empty)
        else:
            widths = [len(c) for c in self.columns]
            for row in cells:
                for i, cell in enumerate(row):
                    widths[i] = max(widths[i], len(cell.text))

            def line(values: Iterable[str]) -> str:
                parts = []
                for i, value in enumerate(values):
                    pad = value.rjust if self.columns[i] in self.right else value.ljust
                    parts.append(pad(widths[i]))
                return "  ".join(parts).rstrip()

            lines.append(line(self.columns))
            lines.append("  ".join("-" * w for w in widths))
            for index, row in enumerate(cells):
                text = line(c.text for c in row)
                lines.append(f"{text}  (revoked)" if index in self.struck else text)
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def html(self) -> str:
        cells = self._cells()
        parts = ['<div class="lumen-table" style="margin:4px 0 10px 0">']
        if self.title:
            parts.append(f'<div style="font-weight:600;margin-bottom:2px">{esc(self.title)}</div>')
        if not cells:
            parts.append(f'<div style="color:{_MUTED}">{esc(self.empty)}</div>')
        else:
            parts.append('<table style="border-collapse:collapse;font-size:90%">')
            head = "".join(
                f'<th style="text-align:{"right" if c in self.right else "left"};padding:2px '
                f'10px;border-bottom:1px solid {_BORDER}">{esc(c)}</th>'
                for c in self.columns
            )
            parts.append(f"<thead><tr>{head}</tr></thead><tbody>")
            for index, row in enumerate(cells):
                style = (
                    ' style="text-decoration:line-through;opacity:.6"'
                    if (index in self.struck)
                    else ""
                )
                tds = "".join(
                    f'<td style="text-align:{"right" if self.columns[i] in self.right else "left"}'
                    f';padding:2px 10px">{cell.as_html()}</td>'
                    for i, cell in enumerate(row)
                )
                parts.append(f"<tr{style}>{tds}</tr>")
            parts.append("</tbody></table>")
        if self.note:
            parts.append(
                f'<div style="color:{_MUTED};font-size:85%">{inline_html(self.note)}</div>'
            )
        parts.append("</div>")
        return "".join(parts)


@dataclass
class Fields(View):
    """Label/value pairs, e.g. a model's detail."""

    pairs: Sequence[tuple[str, CellLike]]
    title: str | None = None

    def text(self) -> str:
        width = max((len(label) for label, _ in self.pairs), default=0)
        lines = [self.title] if self.title else []
        lines += [f"{label.ljust(width)}  {_cell(value).text}" for label, value in self.pairs]
        return "\n".join(lines)

    def html(self) -> str:
        rows = "".join(
            f'<tr><th style="text-align:left;padding:1px 12px 1px 0;color:{_MUTED};'
            f'font-weight:normal;vertical-align:top">{esc(label)}</th>'
            f'<td style="text-align:left;padding:1px 0">{_cell(value).as_html()}</td></tr>'
            for label, value in self.pairs
        )
        title = (
            f'<div style="font-weight:600;margin-bottom:2px">{esc(self.title)}</div>'
            if self.title
            else ""
        )
        return f'<div class="lumen-fields">{title}<table style="font-size:90%">{rows}</table></div>'


@dataclass
class Stack(View):
    """Views one after another."""

    parts: list[View] = field(default_factory=list)

    def text(self) -> str:
        return "\n\n".join(p.text() for p in self.parts)

    def html(self) -> str:
        return '<div class="lumen">' + "".join(p.html() for p in self.parts) + "</div>"


@dataclass
class Markdown(View):
    """Markdown for notebooks, the same text for terminals."""

    markdown: str
    plain: str | None = None

    def text(self) -> str:
        return self.plain if self.plain is not None else self.markdown

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.text(), "text/markdown": self.markdown}


GLYPHS = "█▓▒░#=+*"


@dataclass
class BarChart(View):
    """A stacked text bar chart: one bar per bucket, one glyph per series."""

    labels: Sequence[str]
    series: Sequence[str]
    values: Sequence[Sequence[float]]  # [bucket][series]
    title: str | None = None
    unit: str = ""
    width: int = 40

    def _bars(self) -> list[str]:
        totals = [sum(row) for row in self.values]
        peak = max(totals, default=0) or 1
        bars = []
        for row in self.values:
            bar = ""
            carried = 0.0
            for index, value in enumerate(row):
                exact = value / peak * self.width + carried
                count = round(exact)
                carried = exact - count
                bar += GLYPHS[index % len(GLYPHS)] * count
            bars.append(bar)
        return bars

    def text(self) -> str:
        lines = [self.title] if self.title else []
        label_width = max((len(label) for label in self.labels), default=0)
        for label, bar, row in zip(self.labels, self._bars(), self.values, strict=True):
            lines.append(f"{label.ljust(label_width)} │{bar.ljust(self.width)} {_num(sum(row))}")
        if len(self.series) > 1:
            legend = "  ".join(
                f"{GLYPHS[i % len(GLYPHS)]} {name}" for i, name in enumerate(self.series)
            )
            lines.append(legend)
        if self.unit:
            lines.append(f"({self.unit})")
        return "\n".join(lines)

    def html(self) -> str:
        return f"<pre style='line-height:1.15'>{esc(self.text())}</pre>"


def _num(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.6f}".rstrip("0").rstrip(".")
