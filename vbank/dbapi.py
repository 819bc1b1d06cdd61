"""Core statements run on the driver's cursor of a SQLAlchemy connection.

Why: the chat writer's batches are small under light load (about ten lines) and each runs
seven statements; SQLAlchemy's execution layer (an execution context, parameter and
result processing per statement and per row) cost about 25 µs a statement where the
driver's cursor takes 6 µs (SQLite, timeit), and about 2 µs more per row of a multi-row
insert. The statements are still SQLAlchemy Core, compiled once per dialect, so there is
one statement for both databases; binds and results go through the dialect's type
processors (SQLite stores datetimes as text), and the driver's errors are raised as
SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError`, so the writer's retry rules still apply.

Only for statements whose parameters are plain binds (no ``expanding`` IN lists: build
one statement per list length), inserts that name every value (no Python-side column
defaults) and results of plain columns; anything else is refused with ``ValueError``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.selectable import SelectBase

logger = logging.getLogger(__name__)

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Plan:
    sql: str
    order: tuple[str, ...] | None  # parameter names in order (positional paramstyles)
    defaults: Mapping[str, Any]  # values the statement carries itself (``id == 1``)
    binds: tuple[tuple[str, Processor], ...]  # the bind processors that apply
    results: tuple[Processor | None, ...]  # per result column; empty when none applies


@functools.lru_cache(maxsize=4096)  # a few statements per batch length
def _plan(stmt: ClauseElement, dialect: Dialect, keys: tuple[str, ...] | None) -> _Plan:
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys) if keys else None)
    assert isinstance(compiled, SQLCompiler)
    if "POSTCOMPILE" in compiled.string:
        raise ValueError("expanding parameters are not supported: one statement per length")
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise ValueError("Python-side column defaults are not supported: pass every value")
    binds = []
    defaults = {}
    for bind, name in compiled.bind_names.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            binds.append((name, processor))
        if not bind.required:
            defaults[name] = bind.effective_value
    results: tuple[Processor | None, ...] = ()
    if isinstance(stmt, SelectBase):
        results = tuple(
            col.type.dialect_impl(dialect).result_processor(dialect, None)
            for col in stmt.selected_columns
        )
        if not any(results):
            results = ()
    order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
    return _Plan(compiled.string, order, defaults, tuple(binds), results)


def _params(plan: _Plan, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
    if plan.defaults or plan.binds:
        values = {**plan.defaults, **values}
        for name, processor in plan.binds:
            if name in values:
                values[name] = processor(values[name])
    if plan.order is not None:
        return tuple(values[name] for name in plan.order)
    return values


def _run(conn: Connection, plan: _Plan, params: Any, many: bool) -> list[tuple[Any, ...]]:
    dialect = conn.dialect
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if many:
            cursor.executemany(plan.sql, params)
            return []
        cursor.execute(plan.sql, params)
        rows = cursor.fetchall() if cursor.description is not None else []
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            plan.sql, params, exc, dialect.loaded_dbapi.Error, dialect=dialect, ismulti=many
        ) from exc
    finally:
        cursor.close()
    if plan.results:
        procs = plan.results
        return [
            tuple(v if p is None else p(v) for p, v in zip(procs, row, strict=True)) for row in rows
        ]
    return [tuple(row) for row in rows]


def prepare(stmt: ClauseElement, dialect: Dialect) -> None:
    """Compile ``stmt`` for :func:`execute` now (a writer warming up before it serves)."""
    _plan(stmt, dialect, None)


def execute(
    conn: Connection, stmt: ClauseElement, values: Mapping[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    """Run ``stmt`` with ``values`` in the connection's transaction; the rows it returns."""
    plan = _plan(stmt, conn.dialect, None)
    return _run(conn, plan, _params(plan, values or {}), many=False)


def executemany(conn: Connection, stmt: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run ``stmt`` once per row (a multi-row insert or update); all rows have the keys
    of the first."""
    if not rows:
        return
    plan = _plan(stmt, conn.dialect, tuple(rows[0]))
    _run(conn, plan, [_params(plan, row) for row in rows], many=True)
