"""Playing recordings as an auditor: HTTP Range over plain and encrypted files, strict
paths, and the playback audit events."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.auditor.conftest import People, Seeder, events_of
from vbank.db import Database
from vbank.http.auditor_views import ByteRange, RangeNotSatisfiable, parse_range

DATA = bytes(range(256)) * 40 + b"tail"  # 10 244 bytes: several 4 KiB envelope chunks
SIZE = len(DATA)


@pytest.fixture(params=["plain", "encrypted"])
async def recorded(request: Any, people: People, seed: Seeder) -> str:
    cid = await seed.contact(people.kate, people.ana)
    await seed.recording(cid, DATA, encrypted=request.param == "encrypted")
    return cid


async def test_ranges(auditor: TestClient[Any, Any], recorded: str) -> None:
    url = f"/api/auditor/recordings/{recorded}/1/customer"

    resp = await auditor.get(url)  # no Range: the whole file
    assert resp.status == 200
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.content_type == "video/x-matroska"
    assert int(resp.headers["Content-Length"]) == SIZE
    assert "Content-Range" not in resp.headers
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert await resp.read() == DATA

    cases = {
        "bytes=0-99": (0, 100),
        "bytes=4000-4200": (4000, 4201),  # across an envelope chunk boundary
        "bytes=10000-": (10000, SIZE),  # open-ended
        "bytes=-100": (SIZE - 100, SIZE),  # suffix
        "bytes=-999999": (0, SIZE),  # suffix longer than the file
        "bytes=10240-999999": (10240, SIZE),  # end beyond the file is clamped
        f"bytes={SIZE - 1}-{SIZE - 1}": (SIZE - 1, SIZE),
    }
    for header, (start, end) in cases.items():
        resp = await auditor.get(url, headers={"Range": header})
        assert resp.status == 206, header
        assert resp.headers["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}", header
        assert int(resp.headers["Content-Length"]) == end - start
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert await resp.read() == DATA[start:end], header

    for header in (
        f"bytes={SIZE}-",
        f"bytes={SIZE + 5}-{SIZE + 10}",
        "bytes=-0",
        "bytes=50-10",
        "bytes=x-y",
        "bytes=-",
    ):
        resp = await auditor.get(url, headers={"Range": header})
        assert resp.status == 416, header
        assert resp.headers["Content-Range"] == f"bytes */{SIZE}"
        assert (await resp.json())["code"] == "range_not_satisfiable"

    # another unit, or several ranges: the header may be ignored and the whole file sent
    for header in ("items=0-1", "bytes=0-1,5-6"):
        resp = await auditor.get(url, headers={"Range": header})
        assert resp.status == 200, header
        assert await resp.read() == DATA


async def test_if_range_with_another_etag_sends_the_whole_file(
    auditor: TestClient[Any, Any], recorded: str
) -> None:
    url = f"/api/auditor/recordings/{recorded}/1/customer"
    etag = (await auditor.get(url, headers={"Range": "bytes=0-0"})).headers["ETag"]
    resp = await auditor.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert resp.status == 206 and await resp.read() == DATA[:10]
    resp = await auditor.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert resp.status == 200 and await resp.read() == DATA


async def test_playback_is_audited_once_per_viewing(
    auditor: TestClient[Any, Any], recorded: str, db: Database, people: People
) -> None:
    url = f"/api/auditor/recordings/{recorded}/1/customer"
    await (await auditor.get(url, headers={"Range": "bytes=0-"})).read()
    [event] = await events_of(db, recorded, "auditor.playback")
    assert (event.actor_id, event.actor_role) == (people.auditor, "auditor")
    payload = json.loads(event.payload)
    assert payload["attempt"] == 1 and payload["side"] == "customer"
    assert payload["range"] == "bytes=0-"
    assert payload["file"].startswith(f"{recorded}/attempt-1/customer.mkv")
    # seeking within the same viewing adds nothing; a fresh start from byte 0 does
    for header in ("bytes=5000-", "bytes=-10"):
        await (await auditor.get(url, headers={"Range": header})).read()
    assert len(await events_of(db, recorded, "auditor.playback")) == 1
    await (await auditor.get(url)).read()
    assert len(await events_of(db, recorded, "auditor.playback")) == 2
    # a refused range sends nothing and logs nothing
    await auditor.get(url, headers={"Range": f"bytes={SIZE}-"})
    assert len(await events_of(db, recorded, "auditor.playback")) == 2


async def test_a_mid_file_read_without_a_recent_playback_is_audited(
    auditor: TestClient[Any, Any], recorded: str, db: Database
) -> None:
    url = f"/api/auditor/recordings/{recorded}/1/customer"
    await (await auditor.get(url, headers={"Range": "bytes=100-"})).read()
    [event] = await events_of(db, recorded, "auditor.playback")
    assert json.loads(event.payload)["range"] == "bytes=100-"


async def test_paths_are_validated_strictly(
    auditor: TestClient[Any, Any], people: People, seed: Seeder, settings: Any
) -> None:
    cid = await seed.contact(people.kate, people.ana)
    await seed.recording(cid, DATA)
    other = await seed.contact(people.carl, people.ana)
    outside = Path(settings.data_dir) / "secret.mkv"
    outside.write_bytes(b"not yours")
    for path in (
        f"/api/auditor/recordings/{cid}/1/agent",  # no such side recorded
        f"/api/auditor/recordings/{cid}/2/customer",  # no such attempt
        f"/api/auditor/recordings/{cid}/0/customer",
        f"/api/auditor/recordings/{cid}/01/customer",
        f"/api/auditor/recordings/{cid}/1/supervisor",
        f"/api/auditor/recordings/{cid}/1/..%2F..%2F..%2Fsecret",
        f"/api/auditor/recordings/{cid}/-1/customer",
        f"/api/auditor/recordings/{other}/1/customer",  # exists, but not this contact's
        "/api/auditor/recordings/..%2F..%2Fdata/1/customer",
        "/api/auditor/recordings/0123456789abcdef0123456789abcdef/1/customer",
    ):
        resp = await auditor.get(path)
        assert resp.status == 404, path
        assert (await resp.json())["code"] == "not_found"


async def test_an_event_naming_a_file_elsewhere_is_not_followed(
    auditor: TestClient[Any, Any], people: People, seed: Seeder, db: Database
) -> None:
    from audit.log import append

    victim = await seed.contact(people.carl, people.ana)
    await seed.recording(victim, b"carl's call")
    cid = await seed.contact(people.kate, people.ana)
    async with db.transaction() as s:
        await append(
            s,
            "recording.finalised",
            {"side": "customer", "file": f"{victim}/attempt-1/customer.mkv"},
            session_ref=cid,
        )
    resp = await auditor.get(f"/api/auditor/recordings/{cid}/1/customer")
    assert resp.status == 404


async def test_a_recording_not_yet_finalised_still_plays(
    auditor: TestClient[Any, Any], people: People, seed: Seeder
) -> None:
    cid = await seed.contact(people.kate, people.ana, closed=False)
    await seed.recording(cid, DATA, side="agent", event=False)
    resp = await auditor.get(f"/api/auditor/recordings/{cid}/1/agent")
    assert resp.status == 200 and await resp.read() == DATA


async def test_a_swapped_or_tampered_envelope_is_refused(
    auditor: TestClient[Any, Any], people: People, seed: Seeder
) -> None:
    cid = await seed.contact(people.kate, people.ana)
    path = await seed.recording(cid, DATA, encrypted=True)
    other = await seed.contact(people.carl, people.ana)
    other_path = await seed.recording(other, DATA, encrypted=True)
    # another call's file put in place of this one: its file id gives it away
    os.replace(other_path, path)
    resp = await auditor.get(f"/api/auditor/recordings/{cid}/1/customer")
    assert resp.status == 500
    assert (await resp.json())["code"] == "recording_unreadable"

    # a flipped byte in a middle chunk: the read that needs that chunk is cut short
    third = await seed.contact(people.kate, people.bob)
    path = await seed.recording(third, DATA, encrypted=True)
    raw = bytearray(path.read_bytes())
    raw[129 + 4096 + 16 + 100] ^= 0xFF  # inside chunk 1
    path.write_bytes(bytes(raw))
    url = f"/api/auditor/recordings/{third}/1/customer"
    resp = await auditor.get(url, headers={"Range": "bytes=0-99"})
    assert resp.status == 206 and await resp.read() == DATA[:100]  # chunk 0 is fine
    resp = await auditor.get(url, headers={"Range": "bytes=4096-4199"})
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


def test_parse_range() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-", 10) == ByteRange(0, 10)
    assert parse_range("bytes = 2-3", 10) == ByteRange(2, 4)
    assert parse_range("BYTES=2-3", 10) == ByteRange(2, 4)
    assert parse_range("bytes=-3", 10) == ByteRange(7, 10)
    assert parse_range("bytes=0-1, 3-4", 10) is None
    for bad in ("bytes=10-", "bytes=-0", "bytes=5-4", "bytes=--1", "bytes=1-2-3", "bytes=a-"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(bad, 10)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-5", 0)
