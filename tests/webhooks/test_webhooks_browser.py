"""The webhooks admin on the supervisor page in headless Chromium: add an endpoint (the
secret shown once), then redeliver a dead letter, which the receiver gets, signed."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, expect
from sqlalchemy import update

from tests.browser.conftest import base_url, browser, live_server  # noqa: F401 (fixtures)
from tests.conftest import TEST_PASSWORD, MakeUser
from tests.webhooks.conftest import wait_until
from tests.webhooks.receiver import Receiver
from vbank.context import SERVICES
from vbank.roles import Role
from vbank.webhooks.models import WebhookDelivery
from vbank.webhooks.outbox import enqueue

pytestmark = pytest.mark.browser


async def test_supervisor_adds_an_endpoint_and_redelivers_a_dead_letter(
    browser: Browser,  # noqa: F811
    live_server: TestServer,  # noqa: F811
    app: web.Application,
    make_user: MakeUser,
    receiver: Receiver,
) -> None:
    await make_user("sam", Role.SUPERVISOR)
    await receiver.start()
    context = await browser.new_context(locale="en")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(base_url(live_server) + "/signin")
    await expect(page.locator("body[data-ready='true']")).to_have_count(1)
    await page.fill("#username", "sam")
    await page.fill("#password", TEST_PASSWORD)
    await page.click("#signin-submit")
    await page.wait_for_url("**/supervisor")
    await expect(page.locator("#webhooks-empty")).to_be_visible()

    await page.fill("#webhook-url", receiver.url)
    await page.check("#webhook-type-contact-closed")
    await page.check("#webhook-allow-private")
    await page.click("#webhook-submit")
    await expect(page.locator("#webhook-secret-box")).to_be_visible()
    secret = await page.locator("#webhook-secret").text_content()
    assert secret is not None and secret.startswith("whsec_")
    row = page.locator("#webhook-endpoint-rows tr[data-enabled='true']")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text(receiver.url)

    # a dead letter for that endpoint appears after a refresh; Redeliver sends it
    db = app[SERVICES].db
    async with db.transaction() as session:
        await enqueue(session, "contact.closed", {"contact_id": "c1"})
        await session.execute(update(WebhookDelivery).values(state="dead", attempts=8))
    receiver.secrets = [secret]
    await page.reload()
    dead = page.locator("#webhook-dead-rows tr[data-delivery-id]")
    await expect(dead).to_have_count(1)
    await dead.locator("button[data-action='redeliver']").click()
    await expect(page.locator("#webhook-dead-empty")).to_be_visible()

    async def arrived() -> bool:
        return bool(receiver.ok_ids())

    await wait_until(arrived, timeout=10)
    assert all(c.verified for c in receiver.calls)

    # disabling from the table
    await row.locator("button[data-action='disable']").click()
    await expect(page.locator("#webhook-endpoint-rows tr[data-enabled='false']")).to_have_count(1)
    assert errors == []
    await context.close()
