"""End to end in headless Chromium: after a chat the customer's page offers the survey, the
customer answers, the low score reaches the agent's follow-up panel; and the signed link
page answers a survey without signing in, once."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, expect
from sqlalchemy import select

from tests.browser.conftest import base_url
from tests.browser.helpers import signed_in_page
from tests.conftest import MakeUser
from tests.surveys.conftest import invited_survey, survey_of
from vbank.db import Database
from vbank.roles import Role
from vbank.surveys.models import FollowupTask, Survey

pytestmark = [
    pytest.mark.browser,
    pytest.mark.realtime,
    pytest.mark.flaky(reruns=2, reruns_delay=2),
]


async def test_customer_answers_the_survey_after_a_chat(
    live_server: TestServer, make_user: MakeUser, browser: Browser, db: Database
) -> None:
    await make_user("cust", Role.CUSTOMER, display_name="Kate Customer")
    ana = await make_user("ana", Role.AGENT, skills=("accounts",), display_name="Ana Agent")
    await make_user("sam", Role.SUPERVISOR)
    base = base_url(live_server)
    customer = await signed_in_page(
        await browser.new_context(locale="en"), base, "cust", "customer"
    )
    agent = await signed_in_page(await browser.new_context(locale="en"), base, "ana", "agent")
    await expect(agent.locator("#followups-empty")).to_be_visible()

    await agent.select_option("#status-select", "available")
    await customer.select_option("#skill", "accounts")
    await customer.click("#start-contact")
    await expect(customer.locator("#agent-name")).to_have_text("Ana Agent", timeout=10_000)
    await agent.locator(".contact-item").first.click()
    await customer.fill("#chat-input", "My card was blocked twice")
    await customer.click("#chat-send")
    await expect(agent.locator("#chat-log .chat-msg[data-sender='customer']")).to_contain_text(
        ["My card was blocked twice"], timeout=10_000
    )
    await expect(customer.locator("#survey-card")).to_have_count(0)

    # the agent closes the contact: the customer's page offers the survey at once
    await agent.click("#close-contact")
    card = customer.locator("#survey-card[data-state='form']")
    await expect(card).to_be_visible(timeout=10_000)
    await expect(customer.locator("#survey-heading")).to_have_text("How did we do?")

    # CSAT is required
    await customer.click("#survey-submit")
    await expect(customer.locator("#survey-error")).to_be_visible()
    await customer.click("label[for='survey-csat-2']")
    await customer.click("label[for='survey-nps-3']")
    await customer.fill("#survey-comment", "Took too long to unblock")
    await customer.click("#survey-submit")
    await expect(customer.locator("#survey-card[data-state='done']")).to_have_count(1)
    await expect(customer.locator("#survey-thanks")).to_have_text("Thank you for your feedback.")
    await expect(customer.locator("#survey-form")).to_be_hidden()

    async with db.sessions() as s:
        survey = await s.scalar(select(Survey))
    assert survey is not None
    assert (survey.state, survey.csat, survey.nps, survey.channel) == ("completed", 2, 3, "page")
    assert survey.comment == "Took too long to unblock"

    # the supervisor's dashboard counts the answer: CSAT 2 is not satisfied, NPS 3 detracts
    supervisor = await signed_in_page(
        await browser.new_context(locale="en"), base, "sam", "supervisor"
    )
    row = supervisor.locator(f"#stats-agents tr[data-agent-id='{ana}']")
    await expect(row.locator("td.contacts")).to_have_text("1", timeout=10_000)
    await expect(row.locator("td.csat")).to_have_text("0.0 %")
    await expect(row.locator("td.nps")).to_have_text("-100.0")
    await expect(
        supervisor.locator("#stats-skills tr[data-skill='accounts'] td.csat")
    ).to_have_text("0.0 %")

    # CSAT 2 opened a follow-up call: the agent claims and closes it from the panel
    await agent.click("#followups-refresh")
    item = agent.locator("#followups-list .followup-item[data-state='open']")
    await expect(item).to_have_count(1)
    await expect(item.locator(".followup-customer")).to_have_text("Kate Customer")
    await expect(item.locator(".followup-comment")).to_have_text("Took too long to unblock")
    await item.locator(".followup-claim").click()
    mine = agent.locator("#followups-list .followup-item[data-state='claimed'][data-mine='true']")
    await expect(mine).to_have_count(1)
    await mine.locator(".followup-outcome").select_option("resolved")
    await mine.locator(".followup-note").fill("Unblocked, apologised")
    await mine.locator(".followup-close").click()
    await expect(agent.locator("#followups-list .followup-item")).to_have_count(0)
    await expect(agent.locator("#followups-empty")).to_be_visible()
    async with db.sessions() as s:
        task = await s.scalar(select(FollowupTask))
    assert task is not None and (task.state, task.outcome) == ("closed", "resolved")


async def test_signed_link_page_answers_once_without_sign_in(
    live_server: TestServer,
    app: web.Application,
    make_user: MakeUser,
    browser: Browser,
    db: Database,
) -> None:
    cust = await make_user("cust", Role.CUSTOMER)
    ana = await make_user("ana", Role.AGENT, skills=("accounts",))
    survey, token = await invited_survey(app, db, cust, ana)
    page_url = f"{base_url(live_server)}/survey#t={token}"

    context = await browser.new_context(locale="zh-CN")
    page = await context.new_page()
    await page.goto(page_url)
    await expect(page.locator("body[data-ready='true']")).to_have_count(1)
    await expect(page.locator("#survey-heading")).to_have_text("我们的服务如何？")
    await expect(page.locator("#survey-dismiss")).to_be_hidden()
    await page.click("label[for='survey-csat-5']")
    await page.fill("#survey-comment", "很好")
    await page.click("#survey-submit")
    await expect(page.locator("#survey-card[data-state='done']")).to_have_count(1)
    await expect(page.locator("#survey-thanks")).to_have_text("感谢您的反馈。")
    assert "#t=" not in page.url  # the used link left the history entry

    answered = await survey_of(db, survey.contact_id)
    assert answered is not None
    assert (answered.state, answered.csat, answered.channel) == ("completed", 5, "link")
    assert answered.comment == "很好" and answered.token_used_at is not None

    # opened again: refused, and the page says why
    again = await context.new_page()
    await again.goto(page_url)
    problem = again.locator("#survey-link-problem[data-code='already_answered']")
    await expect(problem).to_be_visible()
    await expect(again.locator("#survey-card")).to_have_count(0)
    # a tampered link
    await again.goto(f"{base_url(live_server)}/survey#t={token[:-3]}AAA")
    await again.reload()
    await expect(again.locator("#survey-link-problem[data-code='invalid_link']")).to_be_visible()
    await context.close()
