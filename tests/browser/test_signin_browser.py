"""Signing in as each role in headless Chromium reaches that role's home page, in both languages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, expect

from tests.browser.conftest import base_url
from tests.conftest import TEST_PASSWORD, MakeUser
from vbank.roles import Role

pytestmark = pytest.mark.browser

CATALOGUES = Path(__file__).resolve().parents[2] / "web" / "static" / "i18n"


def catalogue(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((CATALOGUES / f"{lang}.json").read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
async def test_each_role_reaches_its_home(
    browser: Browser, live_server: TestServer, make_user: MakeUser, lang: str
) -> None:
    names = {
        Role.CUSTOMER: "cust1",
        Role.AGENT: "agent1",
        Role.AUDITOR: "audit1",
        Role.SUPERVISOR: "super1",
    }
    for role, name in names.items():
        await make_user(name, role, display_name=f"{name} display")
    texts = catalogue(lang)
    for role, name in names.items():
        context = await browser.new_context(locale=lang)
        page = await context.new_page()
        await page.goto(base_url(live_server) + "/signin")
        await expect(page.locator("body[data-ready='true']")).to_have_count(1)
        await expect(page.locator("#page-title")).to_have_text(texts["signin.title"])
        assert await page.get_attribute("html", "lang") == lang
        await page.fill("#username", name)
        await page.fill("#password", TEST_PASSWORD)
        await page.click("#signin-submit")
        await page.wait_for_url(f"**/{role.value}")
        await expect(page.locator(f"body[data-page='{role.value}']")).to_have_count(1)
        await expect(page.locator("#user-name")).to_have_text(f"{name} display")
        title_key = await page.get_attribute("#page-title", "data-i18n")
        assert title_key, "role home page title has no i18n key"
        await expect(page.locator("#page-title")).to_have_text(texts[title_key])
        # another role's page is refused
        other = Role.AUDITOR if role is not Role.AUDITOR else Role.AGENT
        resp = await page.request.get(base_url(live_server) + f"/{other.value}", max_redirects=0)
        assert resp.status == 403
        # sign out goes back to the sign-in page and the session is gone
        await page.click("#signout")
        await page.wait_for_url("**/signin")
        me = await page.request.get(base_url(live_server) + "/api/auth/me")
        assert me.status == 401
        await context.close()


async def test_language_switch_and_wrong_password(
    browser: Browser, live_server: TestServer, make_user: MakeUser
) -> None:
    await make_user("cust1", Role.CUSTOMER)
    en, zh = catalogue("en"), catalogue("zh-CN")
    context = await browser.new_context(locale="en-US")
    page = await context.new_page()
    await page.goto(base_url(live_server) + "/signin")
    await expect(page.locator("body[data-ready='true']")).to_have_count(1)
    await expect(page.locator("#page-title")).to_have_text(en["signin.title"])
    await page.select_option("#lang-switch", "zh-CN")
    await expect(page.locator("#page-title")).to_have_text(zh["signin.title"])
    await page.fill("#username", "cust1")
    await page.fill("#password", "definitely-wrong")
    await page.click("#signin-submit")
    error = page.locator("#signin-error")
    await expect(error).to_be_visible()
    text = await error.inner_text()
    assert text.strip(), "no error shown for a wrong password"
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text), f"error not translated: {text!r}"
    # the choice survives a reload
    await page.reload()
    await expect(page.locator("#page-title")).to_have_text(zh["signin.title"])
    await context.close()
