"""The supervisor dashboard in headless Chromium: live queue and agent state (polled), and
the statistics of a contact closed through the contact service, with its survey."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import base_url
from tests.browser.helpers import signed_in_page
from tests.conftest import MakeUser
from tests.supervision.data import add_survey, agent_ready, handled_contact, queued_contact
from vbank.context import SERVICES
from vbank.roles import Role

pytestmark = pytest.mark.browser


async def supervisor_page(browser: Browser, base: str, lang: str = "en") -> Page:
    context = await browser.new_context(locale=lang)
    errors: list[str] = []
    context.on("weberror", lambda err: errors.append(str(err.error)))
    page = await signed_in_page(context, base, "sam", "supervisor")
    assert errors == []
    return page


async def test_dashboard_shows_live_queue_agents_and_stats(
    browser: Browser, live_server: TestServer, app: web.Application, make_user: MakeUser
) -> None:
    contacts = app[SERVICES].realtime.contacts
    await make_user("sam", Role.SUPERVISOR, display_name="Sam Supervisor")
    ana = await make_user("ana", Role.AGENT, display_name="Ana Agent", skills=("accounts",))
    carol = await make_user("carol", Role.CUSTOMER, display_name="Carol Customer")
    dave = await make_user("dave", Role.CUSTOMER, display_name="Dave Customer")
    agent_ready(contacts, ana, ["accounts"])
    closed = datetime.now(UTC)
    contact = await handled_contact(
        contacts,
        carol,
        ana,
        "accounts",
        assigned_at=closed - timedelta(seconds=150),
        closed_at=closed,
    )
    await add_survey(contacts.db, contact, carol, ana, "accounts", at=closed, csat=5, nps=10)

    page = await supervisor_page(browser, base_url(live_server))
    # the agent, live
    agent_row = page.locator(f"#agent-rows tr[data-agent-id='{ana}']")
    await expect(agent_row).to_have_attribute("data-state", "available")
    await expect(agent_row.locator("td.name")).to_have_text("Ana Agent")
    await expect(agent_row.locator("td.load")).to_have_text("0 / 2")
    cards = page.locator("#queue-cards .queue-card[data-skill='cards']")
    await expect(cards.locator(".queue-length")).to_have_attribute("data-value", "0")

    # a customer starts a contact nobody serves: the next poll shows it waiting
    await queued_contact(contacts, dave, "cards")
    await expect(cards.locator(".queue-length")).to_have_attribute("data-value", "1", timeout=6_000)
    await expect(cards.locator(".queue-wait")).not_to_have_text("—")
    assert "Dave" not in await page.locator("main").inner_text()

    # the closed contact's figures, with its survey
    row = page.locator(f"#stats-agents tr[data-agent-id='{ana}']")
    await expect(row.locator("td.contacts")).to_have_text("1")
    await expect(row.locator("td.aht")).to_have_text("2:30")
    await expect(row.locator("td.aht")).to_have_attribute("data-value", "150")
    await expect(row.locator("td.verify-rate")).to_have_text("—")
    await expect(row.locator("td.csat")).to_have_text("100.0 %")
    await expect(row.locator("td.nps")).to_have_text("+100.0")
    today = closed.date().isoformat()
    await expect(page.locator(f"#stats-days tr[data-day='{today}'] td.contacts")).to_have_text("1")
    await expect(page.locator("#stats-skills tr[data-skill='accounts'] td.csat")).to_have_text(
        "100.0 %"
    )
    bar = page.locator(f"#chart-contacts rect.bar[data-day='{today}']")
    await expect(bar).to_have_attribute("data-value", "1")
    await expect(page.locator(f"#chart-csat rect.bar[data-day='{today}']")).to_have_attribute(
        "data-value", "100"
    )
    await expect(page.locator("#stats-days tbody tr")).to_have_count(7)

    # a reversed range is refused on the page; a valid one reloads the tables
    await page.fill("#stats-from", today)
    await page.fill("#stats-to", (closed.date() - timedelta(days=3)).isoformat())
    await page.click("#stats-submit")
    await expect(page.locator("#stats-error")).to_be_visible()
    await page.fill("#stats-to", today)
    await page.click("#stats-submit")
    await expect(page.locator("#stats-error")).to_be_hidden()
    await expect(page.locator("#stats-days tbody tr")).to_have_count(1)
    await expect(row.locator("td.contacts")).to_have_text("1")

    # in Chinese, the labels and the agent state follow
    await page.select_option("#lang-switch", "zh-CN")
    await expect(agent_row.locator(".state-badge")).to_have_text("空闲可接待")
    await expect(page.locator("#stats-heading")).to_have_text("服务表现")
    await page.context.close()
