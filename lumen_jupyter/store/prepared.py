"""Hot statements: compiled once per dialect, run straight on the DB-API connection.

Every model call runs the same dozen small statements (reserve, open the request,
settle, count usage).  Through ``Connection.execute`` SQLAlchemy spends ~70 µs of
Python on each of them (cache key, parameter processing, result set-up) where the
driver needs ~8 µs, and that was a third of the gateway's CPU per call.

A :class:`HotStatement` wraps an ordinary SQLAlchemy statement.  The first time it
runs on a dialect it is compiled by SQLAlchemy, and the SQL text, the order of its
parameters and the types' own bind and result processors are kept; after that it
runs on the DB-API connection inside the caller's transaction, so the values
written and read are exactly those of ``Connection.execute``.  Statements built
per call (admin pages, history queries) keep using SQLAlchemy as they are.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.dml import Insert

from .pipeline import Pipeline, current

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Plan:
    """One statement compiled for one dialect (and, for an INSERT, one set of columns)."""

    sql: str
    names: tuple[str, ...]
    constants: Mapping[str, Any]
    processors: tuple[tuple[int, Processor], ...]
    """(position in ``names``, bind processor) of the parameters whose type has one."""
    positional: bool
    row: type[tuple[Any, ...]] | None
    results: tuple[Processor | None, ...]

    def parameters(self, given: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        merged = {**self.constants, **given} if self.constants else given
        try:
            values = [merged[name] for name in self.names]
        except KeyError as missing:
            raise KeyError(f"missing parameter {missing} for: {self.sql}") from None
        for position, process in self.processors:
            value = values[position]
            if value is not None:
                values[position] = process(value)
        return values if self.positional else dict(zip(self.names, values, strict=True))


class HotResult:
    """What a hot statement answered: ``rowcount``, and rows for SELECT and RETURNING."""

    __slots__ = ("_cursor", "_number", "_pipeline", "_plan")

    def __init__(self, cursor: Any, plan: _Plan, pipeline: Pipeline | None = None) -> None:
        self._cursor = cursor
        self._plan = plan
        # sent without waiting in a pipeline: its answer is waited for when read
        self._pipeline = pipeline
        self._number = pipeline.sent() if pipeline is not None else 0

    def _answered(self) -> None:
        if self._pipeline is not None:
            self._pipeline.wait_for(self._number)
            self._pipeline = None

    @property
    def rowcount(self) -> int:
        self._answered()
        return int(self._cursor.rowcount)

    def first(self) -> Any:
        self._answered()
        raw = self._cursor.fetchone()
        if raw is None:
            return None
        assert self._plan.row is not None, "the statement returns no rows"
        processed = (
            value if process is None or value is None else process(value)
            for value, process in zip(raw, self._plan.results, strict=True)
        )
        return self._plan.row(*processed)

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]


def _row_type(names: list[str]) -> type[tuple[Any, ...]]:
    """Rows that read like SQLAlchemy's: by position and by column name."""
    return namedtuple("HotRow", names, rename=True)


class HotStatement:
    """A statement run many times a second with different parameters."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._plans: dict[tuple[str, tuple[str, ...]], _Plan] = {}

    def run(self, conn: Connection, parameters: Mapping[str, Any]) -> HotResult:
        """Execute in ``conn``'s transaction (which must be open)."""
        dialect = conn.dialect
        columns = tuple(parameters) if isinstance(self.statement, Insert) else ()
        plan = self._plans.get((dialect.name, columns))
        if plan is None:
            plan = self._plans[(dialect.name, columns)] = self._compile(dialect, columns)
        driver = conn.connection.dbapi_connection
        assert driver is not None, "the connection is closed"
        cursor = driver.cursor()
        cursor.execute(plan.sql, plan.parameters(parameters))
        return HotResult(cursor, plan, current(driver))

    def _compile(self, dialect: Dialect, columns: tuple[str, ...]) -> _Plan:
        compiled: Any = self.statement.compile(
            dialect=dialect, column_keys=list(columns) if columns else None
        )
        names = tuple(compiled.positiontup or compiled.binds)
        constants: dict[str, Any] = {}
        processors: list[tuple[int, Processor]] = []
        for position, name in enumerate(names):
            parameter = compiled.binds[name]
            if not parameter.required:
                constants[name] = parameter.effective_value
            process = parameter.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors.append((position, process))
        if isinstance(self.statement, Insert):
            constants.update(self._insert_defaults(names, columns))
        returned = list(getattr(self.statement, "exported_columns", ()) or ())
        row: type[tuple[Any, ...]] | None = None
        if returned:
            row = _row_type([c.key for c in returned])
        return _Plan(
            sql=compiled.string,
            names=names,
            constants=constants,
            processors=tuple(processors),
            positional=bool(compiled.positional),
            row=row,
            results=tuple(
                c.type.dialect_impl(dialect).result_processor(dialect, None) for c in returned
            ),
        )

    def _insert_defaults(self, names: tuple[str, ...], given: tuple[str, ...]) -> dict[str, Any]:
        """Columns left out of an INSERT take their scalar Python-side default, as
        SQLAlchemy would fill in; a callable default has no place in a hot INSERT."""
        table = self.statement.table  # type: ignore[attr-defined]
        defaults: dict[str, Any] = {}
        for name in names:
            if name in given or name not in table.c:
                continue
            default = table.c[name].default
            if default is None:
                continue
            if not getattr(default, "is_scalar", False):
                raise ValueError(f"{table.name}.{name} has a computed default; pass it explicitly")
            defaults[name] = default.arg
        return defaults
