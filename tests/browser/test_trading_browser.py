"""End to end in headless Chromium, in English and Chinese: in a verified session the agent
prepares a transfer between the customer's own accounts, the customer sees the card in the
page language and confirms it, both screens show the executed state and the new balances,
and the money moves once; a refused draft and a rejected one show on the agent's screen."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, expect
from sqlalchemy import select

from tests.browser.conftest import base_url
from tests.browser.helpers import signed_in_page
from tests.conftest import MakeUser
from tests.integration.chat.conftest import session_events
from tests.trading.conftest import add_account
from vbank.contact.models import Contact
from vbank.db import Database
from vbank.models import BankAccount
from vbank.roles import Role

pytestmark = [
    pytest.mark.browser,
    pytest.mark.realtime,
    pytest.mark.flaky(reruns=2, reruns_delay=2),
]

CATALOGUES = Path(__file__).resolve().parents[2] / "web" / "static" / "i18n"
CURRENT, SAVINGS = "VB000000009001", "VB000000009002"
CNY = {"en": "CNY", "zh-CN": "人民币"}
TITLE = {"en": "Transfer between your accounts", "zh-CN": "本人账户间转账"}  # server-rendered

# decimal text → minor units (or the refusal), exercised in the page's own module
PARSER_CASES = [
    ("12.50", "CNY", {"minor": 1250}),
    ("12.5", "CNY", {"minor": 1250}),
    ("19.99", "CNY", {"minor": 1999}),  # 19.99 * 100 is 1998.999… in floating point
    ("0.30", "CNY", {"minor": 30}),
    (" 7 ", "CNY", {"minor": 700}),
    ("1000000000000", "CNY", {"minor": 100_000_000_000_000}),
    ("100", "JPY", {"minor": 100}),
    ("1.5", "JPY", {"error": "decimals"}),
    ("12.345", "CNY", {"error": "decimals"}),
    ("0.00", "CNY", {"error": "zero"}),
    ("10000000000001", "CNY", {"error": "too_large"}),
    ("", "CNY", {"error": "format"}),
    ("-1", "CNY", {"error": "format"}),
    ("1e3", "CNY", {"error": "format"}),
    ("12.", "CNY", {"error": "format"}),
    (".5", "CNY", {"error": "format"}),
    ("1,000", "CNY", {"error": "format"}),
]
PARSE_JS = """async (cases) => {
  const m = await import('/static/js/trading.js');
  return cases.map(([text, currency]) => m.parseAmount(text, currency));
}"""


def catalogue(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((CATALOGUES / f"{lang}.json").read_text(encoding="utf-8"))
    return data


async def balances(db: Database) -> dict[str, int]:
    async with db.sessions() as session:
        rows = await session.execute(select(BankAccount.number, BankAccount.balance_minor))
        return {n: b for n, b in rows.all()}


async def verify_assigned_contact(db: Database) -> str:
    """Stamp the contact verified, as an approved face check would (its own browser test)."""
    async with db.transaction() as session:
        contact = await session.scalar(select(Contact).where(Contact.state == "assigned"))
        assert contact is not None
        contact.verified_at = datetime.now(UTC)
        return contact.id


async def expect_balances(page: Page, expected: dict[str, str]) -> None:
    for number, text in expected.items():
        await expect(
            page.locator(f"#trade-accounts li[data-number='{number}'] .account-balance")
        ).to_have_text(text, timeout=10_000)


async def prepare(agent: Page, amount: str) -> None:
    await agent.select_option("#trade-kind", "own_transfer")
    await agent.select_option("#trade-from", CURRENT)
    await agent.select_option("#trade-to", SAVINGS)
    await agent.fill("#trade-amount", amount)
    await agent.click("#trade-prepare")


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
async def test_agent_drafts_customer_confirms_both_see_new_balances(
    live_server: TestServer, make_user: MakeUser, browser: Browser, db: Database, lang: str
) -> None:
    texts = catalogue(lang)
    cny = CNY[lang]
    cust = await make_user("cust", Role.CUSTOMER, display_name="Kate Customer")
    await make_user("ana", Role.AGENT, skills=("accounts",), display_name="Ana Agent")
    await add_account(db, cust, "current", "CNY", 200_000, CURRENT)
    await add_account(db, cust, "savings", "CNY", 0, SAVINGS)
    base = base_url(live_server)
    customer = await signed_in_page(
        await browser.new_context(locale=lang), base, "cust", "customer"
    )
    agent = await signed_in_page(await browser.new_context(locale=lang), base, "ana", "agent")

    # the customer's own balances show before any contact
    await expect_balances(customer, {CURRENT: f"{cny} 2,000.00", SAVINGS: f"{cny} 0.00"})
    results = await customer.evaluate(PARSE_JS, [[t, c] for t, c, _ in PARSER_CASES])
    assert results == [want for _, _, want in PARSER_CASES]

    await agent.select_option("#status-select", "available")
    await customer.select_option("#skill", "accounts")
    await customer.click("#start-contact")
    await expect(customer.locator("#agent-name")).to_have_text("Ana Agent", timeout=10_000)
    # not verified yet: the panel says what is missing
    await agent.locator(".contact-item").first.click()
    await expect(agent.locator("#trading-panel[data-status='not_verified']")).to_be_visible()
    await expect(agent.locator("#trade-status")).to_have_text(texts["trading.agent.not_verified"])
    await expect(agent.locator("#trade-form")).to_be_hidden()

    # verified (as an approved face check would); a reload asks the server again
    contact_id = await verify_assigned_contact(db)
    await agent.reload()
    await expect(agent.locator("body[data-ws='open']")).to_have_count(1, timeout=15_000)
    await agent.locator(".contact-item").first.click()

    panel = agent.locator("#trading-panel[data-status='ok']")
    await expect(panel).to_be_visible(timeout=10_000)
    await expect_balances(agent, {CURRENT: f"{cny} 2,000.00", SAVINGS: f"{cny} 0.00"})
    await expect(agent.locator("#trade-currency")).to_have_text("CNY")

    # more decimals than the currency has: refused in the form, nothing sent
    await prepare(agent, "12.345")
    await expect(agent.locator("#trade-error")).to_have_text(texts["trading.amount.decimals"])
    await expect(agent.locator("#trade-drafts-empty")).to_be_visible()

    # the draft: the customer sees the card in the page language and confirms it
    await prepare(agent, "12.50")
    card = customer.locator("#trade-cards article.trade-card[data-state='pending']")
    await expect(card).to_have_count(1, timeout=10_000)
    assert await card.get_attribute("data-lang") == lang
    await expect(card.locator(".trade-card-title")).to_have_text(TITLE[lang])
    await expect(card.locator(".trade-card-line dd").first).to_have_text(f"{cny} 12.50")
    await expect(
        agent.locator("#trade-drafts li.trade-draft[data-state='pending'] .trade-state")
    ).to_have_text(texts["trading.state.agent.pending"])
    await card.locator("button.trade-confirm").click()

    done = customer.locator("#trade-cards article.trade-card[data-state='executed']")
    await expect(done).to_have_count(1, timeout=10_000)
    await expect(done.locator(".trade-state")).to_have_text(
        texts["trading.state.customer.executed"]
    )
    await expect(done.locator("button")).to_have_count(0)
    executed = agent.locator("#trade-drafts li.trade-draft[data-state='executed']")
    await expect(executed).to_have_count(1, timeout=10_000)
    await expect(executed.locator(".trade-state")).to_have_text(
        texts["trading.state.agent.executed"]
    )
    new = {CURRENT: f"{cny} 1,987.50", SAVINGS: f"{cny} 12.50"}
    await expect_balances(customer, new)
    await expect_balances(agent, new)

    # a refusal by the server, shown in the panel in the page language
    await prepare(agent, "5000")
    await expect(agent.locator("#trade-error")).to_have_text(
        texts["trading.reason.insufficient_funds"], timeout=10_000
    )

    # a second draft the customer rejects: the agent's screen says so
    await prepare(agent, "1")
    second = customer.locator("#trade-cards article.trade-card[data-state='pending']")
    await expect(second.locator(".trade-card-line dd").first).to_have_text(
        f"{cny} 1.00", timeout=10_000
    )
    await second.locator("button.trade-reject").click()
    rejected = agent.locator("#trade-drafts li.trade-draft[data-state='rejected']")
    await expect(rejected.locator(".trade-state")).to_have_text(
        texts["trading.state.agent.rejected"], timeout=10_000
    )
    await expect(rejected.locator("button.trade-withdraw")).to_have_count(0)
    await expect(
        customer.locator("#trade-cards article.trade-card[data-state='rejected']")
    ).to_have_count(1)
    await expect_balances(customer, new)

    assert await balances(db) == {CURRENT: 198_750, SAVINGS: 1_250}
    types = [e.type for e in await session_events(db, contact_id)]
    assert types.count("transaction.executed") == 1
    assert types.count("trade.confirmed") == 1
    assert types.count("trade.rejected") == 1
