"""Property-based tampering: every single-byte edit, deletion, insertion, reordering and
truncation of the stored log (in the database and in an export) is detected, and the
report names the first position that differs from what was signed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, text, update

from audit.checkpoints import WitnessRecord, create_checkpoint, load_checkpoints
from audit.keys import KeyRegistry
from audit.log import FORMAT_CHAINED, FORMAT_LEAF, GENESIS_HASH
from audit.models import AuditEvent, AuditHead
from audit.verifier import (
    CheckpointClaim,
    ExportedEvent,
    VerifyReport,
    export_lines,
    verify_export_lines,
    verify_from_database,
)
from tests.audit.conftest import ORIGIN, OTHER, fill, make_events, sign_sizes
from vbank.db import Database

N = 24
SIZES = (8, 16, 24)
PUBLIC = KeyRegistry([OTHER.public])
MIXED = 10  # a mixed log: events 1..10 in format 1 (written before format 2), then format 2


def _lines(events: Sequence[ExportedEvent], claims: Sequence[CheckpointClaim]) -> list[bytes]:
    head = (len(events), events[-1].hash if claims else "")
    lines = export_lines(events, claims, head, origin=ORIGIN, event_count=len(events))
    return [line.encode() for line in lines]


@dataclass(frozen=True)
class _Export:
    """An export of a signed log and foreign event lines to insert into it."""

    lines: list[bytes]
    foreign: list[bytes]

    @property
    def header(self) -> bytes:
        return self.lines[0]

    @property
    def events(self) -> list[bytes]:
        return self.lines[1 : N + 1]

    @property
    def tail(self) -> list[bytes]:
        return self.lines[N + 1 :]


def _export(chained: int) -> _Export:
    events = make_events(N, chained=chained)
    claims = sign_sizes(events, SIZES, OTHER, datetime(2026, 3, 1, tzinfo=UTC))
    foreign = _lines(make_events(N, start_ts=5, chained=chained), [])[1 : N + 1]
    return _Export(_lines(events, claims), foreign)


EXPORTS = {"format2": _export(0), "mixed": _export(MIXED), "format1": _export(N)}
LOGS = pytest.mark.parametrize("log", ["format2", "mixed"])


def _examples(default: int) -> int:
    """Examples per property; VBANK_PROP_EXAMPLES raises it for a soak run."""
    return max(default, int(os.environ.get("VBANK_PROP_EXAMPLES", "0")))


PROPS = settings(max_examples=_examples(250), deadline=None)


def _verify_lines(lines: Sequence[bytes]) -> VerifyReport:
    blob = b"".join(lines)
    split = blob.splitlines(keepends=True)
    return verify_export_lines(lambda: split, PUBLIC)


def _first_difference(mutated: Sequence[bytes], original: Sequence[bytes]) -> int | None:
    """1-based position of the first event line that differs (None: identical)."""
    for k in range(max(len(mutated), len(original))):
        if k >= len(mutated) or k >= len(original) or mutated[k] != original[k]:
            return k + 1
    return None


@pytest.mark.parametrize("log", EXPORTS)
def test_the_untouched_export_verifies(log: str) -> None:
    report = _verify_lines(EXPORTS[log].lines)
    assert report.ok and report.events == N and report.checkpoints == 3, report


@st.composite
def event_line_mutations(draw: st.DrawFn, export: _Export) -> tuple[str, list[bytes]]:
    lines = list(export.events)
    kind = draw(st.sampled_from(["edit", "delete", "insert", "swap", "move", "truncate"]))
    if kind == "edit":
        i = draw(st.integers(0, N - 1))
        pos = draw(st.integers(0, len(lines[i]) - 1))
        old = lines[i][pos]
        new = draw(st.integers(0, 255).filter(lambda b: b != old))
        lines[i] = lines[i][:pos] + bytes([new]) + lines[i][pos + 1 :]
    elif kind == "delete":
        del lines[draw(st.integers(0, N - 1))]
    elif kind == "insert":
        source = draw(st.sampled_from(["copy", "foreign", "junk"]))
        if source == "copy":
            line = lines[draw(st.integers(0, N - 1))]
        elif source == "foreign":
            line = export.foreign[draw(st.integers(0, N - 1))]
        else:
            line = draw(st.binary(min_size=0, max_size=40).filter(lambda b: b"\n" not in b))
            line += b"\n"
        lines.insert(draw(st.integers(0, N)), line)
    elif kind in ("swap", "move"):
        i = draw(st.integers(0, N - 2))
        j = draw(st.integers(i + 1, N - 1))
        if kind == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines.insert(j, lines.pop(i))
    else:
        del lines[draw(st.integers(0, N - 1)) :]
    return kind, lines


@LOGS
@PROPS
@given(data=st.data())
def test_every_event_line_mutation_is_located(log: str, data: st.DataObject) -> None:
    export = EXPORTS[log]
    kind, lines = data.draw(event_line_mutations(export))
    expected = _first_difference(lines, export.events)
    assert expected is not None
    report = _verify_lines([export.header, *lines, *export.tail])
    assert not report.ok, kind
    assert report.first_bad_seq == expected, (kind, report)


@LOGS
@PROPS
@given(data=st.data())
def test_every_byte_edit_or_cut_anywhere_is_detected(log: str, data: st.DataObject) -> None:
    """Edits of checkpoint and head lines and cuts of the file fail too (the header's
    informational fields are not part of the log and may be edited)."""
    export = EXPORTS[log]
    blob = b"".join(export.lines)
    events_end = len(export.header) + sum(map(len, export.events))
    if data.draw(st.booleans(), "cut"):
        cut = data.draw(st.integers(len(export.header), len(blob) - 1), "offset")
        report = _verify_lines([blob[:cut]])
        assert not report.ok
        if cut < events_end:  # a cut inside the events names the first one it removed
            whole = len(blob[len(export.header) : cut].splitlines())
            partial = not blob[:cut].endswith(b"\n")
            assert report.first_bad_seq == whole + (0 if partial else 1), report
        return
    pos = data.draw(st.integers(events_end, len(blob) - 1), "position")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != blob[pos]), "byte")
    report = _verify_lines([blob[:pos] + bytes([new]) + blob[pos + 1 :]])
    assert not report.ok, report


# ------------------------------------------------------------------------ the database

COLUMNS = (
    *("ts_us", "actor_id", "actor_role", "session_ref", "type", "payload", "prev_hash", "hash"),
    "format",
)
FIELDS = ("seq", *COLUMNS)


def _flip(value: Any, pos: int, ch: str) -> Any:
    if value is None:
        return 7 if isinstance(ch, str) and ch.isdigit() else ch
    if isinstance(value, int):
        return value + (pos % 9) + 1
    s = str(value)
    i = pos % len(s)
    new = ch if ch != s[i] else ("x" if s[i] != "x" else "y")
    return s[:i] + new + s[i + 1 :]


@st.composite
def db_mutations(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["edit", "delete", "insert", "reorder", "truncate"]))
    case: dict[str, Any] = {"kind": kind}
    if kind == "edit":
        case.update(
            seq=draw(st.integers(1, N)),
            column=draw(st.sampled_from(COLUMNS)),
            pos=draw(st.integers(0, 200)),
            ch=draw(st.sampled_from('0a9fZ{}"é')),
        )
    elif kind == "delete":
        case.update(seq=draw(st.integers(1, N)))
    elif kind == "insert":
        case.update(seq=draw(st.integers(1, N + 1)), copy=draw(st.integers(1, N)))
    elif kind == "reorder":
        i = draw(st.integers(1, N - 1))
        case.update(i=i, j=draw(st.integers(i + 1, N)))
    else:
        case.update(
            keep=draw(st.integers(0, N - 1)),
            head=draw(st.booleans()),
            checkpoints=draw(st.booleans()),
        )
    return case


async def _rows(session: Any) -> list[tuple[Any, ...]]:
    result = await session.execute(
        select(*(getattr(AuditEvent, f) for f in FIELDS)).order_by(AuditEvent.seq)
    )
    return [tuple(r) for r in result.all()]


async def _apply(session: Any, case: dict[str, Any], rows: list[tuple[Any, ...]]) -> None:
    kind = case["kind"]
    if kind == "edit":
        col = case["column"]
        old = rows[case["seq"] - 1][FIELDS.index(col)]
        new = _flip(old, case["pos"], case["ch"])
        if col == "actor_id" and not isinstance(new, int):
            new = 99
        if col == "format" and case["pos"] % 2:  # the other known format, half the time
            new = FORMAT_CHAINED if old == FORMAT_LEAF else FORMAT_LEAF
        await session.execute(
            update(AuditEvent).where(AuditEvent.seq == case["seq"]).values({col: new})
        )
    elif kind == "delete":
        await session.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": case["seq"]})
    elif kind == "insert":
        s = case["seq"]  # shift later events up by one (in two steps: seq is the key)
        await session.execute(
            text("UPDATE audit_events SET seq = -(seq + 1) WHERE seq >= :s"), {"s": s}
        )
        await session.execute(text("UPDATE audit_events SET seq = -seq WHERE seq < 0"))
        copy = dict(zip(FIELDS, rows[case["copy"] - 1], strict=True))
        copy["seq"] = s
        await session.execute(insert(AuditEvent).values(**copy))
    elif kind == "reorder":
        i, j = case["i"], case["j"]
        await session.execute(text("UPDATE audit_events SET seq = -1 WHERE seq = :i"), {"i": i})
        await session.execute(
            text("UPDATE audit_events SET seq = :i WHERE seq = :j"), {"i": i, "j": j}
        )
        await session.execute(text("UPDATE audit_events SET seq = :j WHERE seq = -1"), {"j": j})
    else:
        keep = case["keep"]
        await session.execute(text("DELETE FROM audit_events WHERE seq > :k"), {"k": keep})
        if case["head"] or case["checkpoints"]:
            last = rows[keep - 1][FIELDS.index("hash")] if keep else GENESIS_HASH
            await session.execute(update(AuditHead).values(seq=keep, hash=last))
        if case["checkpoints"]:
            await session.execute(
                text("DELETE FROM audit_checkpoints WHERE size > :k"), {"k": keep}
            )


@pytest.fixture(params=["format2", "mixed"])
async def signed_log(
    db: Database, keys: KeyRegistry, request: pytest.FixtureRequest
) -> list[WitnessRecord]:
    """N events with checkpoints at SIZES (the first MIXED written by the format-1
    appender in the mixed log); returns the witness's copies of them."""
    chained = MIXED if request.param == "mixed" else 0
    done = 0
    for size in SIZES:
        old = max(0, min(size, chained) - done)
        await fill(db, old, start=done, chained=True)
        await fill(db, size - done - old, start=done + old)
        await create_checkpoint(db, keys, origin=ORIGIN)
        done = size
    async with db.sessions() as session:
        return [WitnessRecord(r.note, r.signed_at_us) for r in await load_checkpoints(session)]


class _Rollback(Exception):
    pass


@settings(
    max_examples=_examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=db_mutations())
async def test_every_stored_log_mutation_is_located(
    case: dict[str, Any], db: Database, keys: KeyRegistry, signed_log: list[WitnessRecord]
) -> None:
    public = keys.public_only()
    report: VerifyReport | None = None
    try:
        async with db.transaction() as session:
            original = await _rows(session)
            await _apply(session, case, original)
            mutated = await _rows(session)
            report = await verify_from_database(session, public, witness=signed_log)
            raise _Rollback
    except _Rollback:
        pass
    assert report is not None
    expected = _first_difference(mutated, original)  # type: ignore[arg-type]
    assert expected is not None, case
    assert not report.ok, (case, report)
    assert report.first_bad_seq == expected, (case, report)
