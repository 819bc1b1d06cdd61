"""The auditor console in headless Chromium: find a session, open it, read its timeline,
see the evidence and play (and seek in) its encrypted recording; other roles are refused."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, expect

from tests.auditor.conftest import People, Seeder, events_of, make_mkv
from tests.browser.conftest import base_url, browser, live_server  # noqa: F401 (fixtures)
from tests.browser.helpers import signed_in_page
from vbank.db import Database

pytestmark = pytest.mark.browser


def _jpeg(shade: int) -> bytes:
    img = np.full((120, 120, 3), shade, dtype=np.uint8)
    cv2.circle(img, (60, 60), 40, (255 - shade, 128, shade), -1)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


async def test_auditor_finds_opens_and_plays_a_session(
    browser: Browser,  # noqa: F811
    live_server: TestServer,  # noqa: F811
    people: People,
    seed: Seeder,
    db: Database,
) -> None:
    cid = await seed.contact(
        people.kate,
        people.ana,
        messages=(("customer", "Can you see my card?"), ("agent", "Yes, thank you.")),
    )
    other = await seed.contact(people.carl, people.bob)
    await seed.consent(cid, people.kate)
    video = make_mkv(seconds=4.0)
    await seed.recording(cid, video, side="customer", encrypted=True)
    await seed.recording(cid, video, side="agent")
    await seed.verification(cid, people.kate, people.ana, reference=_jpeg(40), live=_jpeg(200))
    base = base_url(live_server)

    context = await browser.new_context(locale="en", timezone_id="Asia/Shanghai")
    page = await signed_in_page(context, base, "audrey", "auditor")
    await expect(page.locator("body[data-auditor-ready='true']")).to_have_count(1)
    # the newest sessions are listed at once; a search narrows them down
    await expect(page.locator("#results tr.session-row")).to_have_count(2)
    await page.fill("#search-customer", "kate")
    await page.select_option("#search-outcome", "closed")
    await page.click("#search-submit")
    rows = page.locator("#results tr.session-row")
    await expect(rows).to_have_count(1)
    # dates are the auditor's own days: 09:00 UTC on 10 March is 17:00 in Shanghai
    await page.fill("#search-from", "2026-03-11")
    await page.click("#search-submit")
    await expect(rows).to_have_count(0)
    await expect(page.locator("#results-status")).to_have_attribute(
        "data-i18n", "auditor.sessions.none"
    )
    await page.fill("#search-from", "2026-03-10")
    await page.fill("#search-to", "2026-03-10")
    await page.click("#search-submit")
    await expect(rows).to_have_count(1)
    await expect(page.locator(f"tr.session-row[data-contact-id='{other}']")).to_have_count(0)
    row = page.locator(f"tr.session-row[data-contact-id='{cid}']")
    await expect(row).to_contain_text("Kate Hill")
    await row.click()

    await expect(page.locator("#session-view")).to_be_visible()
    items = page.locator("#timeline .timeline-item")
    await expect(items.first).to_have_attribute("data-type", "contact.queued")
    chat = page.locator("#timeline .timeline-item[data-type='chat.message']")
    await expect(chat).to_have_count(2)
    await expect(chat.nth(0)).to_contain_text("Can you see my card?")
    await expect(
        page.locator("#timeline .timeline-item[data-type='video.consent']")
    ).to_contain_text("version")
    await expect(
        page.locator("#timeline .timeline-item[data-type='verify.decision']")
    ).to_contain_text("Identity confirmed")
    seqs = [int(s) for s in await items.evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert seqs == sorted(seqs)
    badge = page.locator("#integrity")
    assert await badge.get_attribute("data-ok") in ("true", "unknown")
    await expect(badge).not_to_be_empty()

    # evidence images are decrypted and shown
    snaps = page.locator("img.snapshot")
    await expect(snaps).to_have_count(2)
    await page.wait_for_function(
        "() => [...document.querySelectorAll('img.snapshot')]"
        ".every(i => i.complete && i.naturalWidth === 120)"
    )

    # the encrypted recording plays, and seeking works (Range requests)
    player = page.locator("video.recording[data-side='customer']")
    await expect(player).to_have_count(1)
    assert await player.get_attribute("controls") is not None
    await player.evaluate("v => { v.muted = true; return v.play(); }")
    await page.wait_for_function(
        "() => document.querySelector(\"video.recording[data-side='customer']\").currentTime > 0.5",
        timeout=20_000,
    )
    duration = await player.evaluate("v => v.duration")
    assert 3.5 < duration < 4.5
    await player.evaluate(
        """v => new Promise((resolve) => {
             v.addEventListener('seeked', resolve, { once: true });
             v.currentTime = 3.0;
           })"""
    )
    await page.wait_for_function(
        "() => document.querySelector(\"video.recording[data-side='customer']\").currentTime > 3.1",
        timeout=20_000,
    )
    assert await player.evaluate("v => v.error") is None

    played = [json.loads(e.payload) for e in await events_of(db, cid, "auditor.playback")]
    assert any(p["side"] == "customer" for p in played)
    viewed = [json.loads(e.payload)["what"] for e in await events_of(db, cid, "auditor.viewed")]
    assert "timeline" in viewed and viewed.count("snapshot") == 2

    # the export button says whether the exporter exists
    note = page.locator("#export-note")
    await expect(note).not_to_be_empty()

    # the other language
    await page.select_option("#lang-switch", "zh-CN")
    await expect(page.locator("#page-title")).to_have_text("审计复核")
    await expect(
        page.locator("#timeline .timeline-item[data-type='chat.message'] .timeline-title").first
    ).to_have_text("聊天消息")
    await context.close()

    # an agent is refused the page and the API
    context = await browser.new_context(locale="en")
    page = await signed_in_page(context, base, "ana", "agent")
    resp = await page.request.get(base + "/auditor", max_redirects=0)
    assert resp.status == 403
    resp = await page.request.get(base + "/api/auditor/sessions")
    assert resp.status == 403
    resp = await page.request.get(base + f"/api/auditor/recordings/{cid}/1/customer")
    assert resp.status == 403
    await page.goto(base + "/auditor")
    await expect(page.locator("body")).to_contain_text("403")
    await context.close()
