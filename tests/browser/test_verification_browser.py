"""End to end in headless Chromium with a fake camera streaming a real face video
(LivePortrait d18): the customer is verified against their own reference photo and not
against another person's. The challenge is fixed to the movement the clip contains (a
blink); random challenges against replays are measured in tests/unit/identity."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, async_playwright, expect
from sqlalchemy import select

from tests.browser.conftest import CHROMIUM, FAKE_CAMERA, base_url, chromium_args
from tests.browser.helpers import assert_video_plays, signed_in_page
from tests.conftest import MakeUser
from vbank.app import create_app
from vbank.config import Settings
from vbank.contact.models import Contact
from vbank.db import Database
from vbank.demo import store_reference_photo
from vbank.evidence import EvidenceStore
from vbank.models import User
from vbank.roles import Role

pytestmark = [
    pytest.mark.browser,
    pytest.mark.realtime,
    pytest.mark.flaky(reruns=2, reruns_delay=2),
]

CAMERA = FAKE_CAMERA / "liveportrait_d18_480x480.mjpeg"
FACES = Path(__file__).resolve().parents[1] / "data" / "faces" / "derived"


@pytest.fixture
def app(settings: Settings) -> web.Application:
    return create_app(replace(settings, verify_fixed_steps=("blink",), verify_time_limit_s=30.0))


async def _enrol(settings: Settings, db: Database, photo: Path) -> None:
    async with db.transaction() as session:
        user = await session.scalar(select(User).where(User.username == "cust"))
        assert user is not None
        await store_reference_photo(session, EvidenceStore.from_settings(settings), user, photo)


async def _into_live_video(customer: Page, agent: Page) -> None:
    await agent.select_option("#status-select", "available")
    await customer.select_option("#skill", "accounts")
    await customer.click("#start-contact")
    await expect(agent.locator(".contact-item")).to_have_count(1, timeout=10_000)
    await agent.locator(".contact-item").first.click()
    await agent.click("#video-request")
    await expect(customer.locator("#consent-dialog")).to_be_visible()
    await customer.click("#consent-accept")
    await expect(agent.locator("#video-state[data-state='live']")).to_have_count(1, timeout=30_000)
    # as an agent would: see the customer on screen before starting the check (this also lets
    # the browser's sending rate ramp up, so the check does not start on its first frames)
    await assert_video_plays(agent, "#remote-video")


@pytest.mark.parametrize(
    ("photo", "expect_match"),
    [("liveportrait_d18_f200.jpg", True), ("katie_hill_f106.jpg", False)],
    ids=["own-reference", "other-persons-reference"],
)
async def test_face_match_in_the_browser(
    live_server: TestServer,
    make_user: MakeUser,
    settings: Settings,
    db: Database,
    photo: str,
    expect_match: bool,
) -> None:
    await make_user("cust", Role.CUSTOMER)
    await make_user("ana", Role.AGENT, skills=("accounts",))
    await _enrol(settings, db, FACES / photo)
    base = base_url(live_server)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(CAMERA)
        )
        try:
            customer = await signed_in_page(
                await browser.new_context(locale="en"), base, "cust", "customer"
            )
            agent = await signed_in_page(
                await browser.new_context(locale="en"), base, "ana", "agent"
            )
            await _into_live_video(customer, agent)

            await agent.select_option("#verify-reference", "on_file")
            await agent.click("#verify-start")
            # the customer sees the challenge step as it is asked
            await expect(customer.locator("#verify-steps li[data-step='blink']")).to_have_count(
                1, timeout=20_000
            )
            result = agent.locator("#verify-result")
            await expect(result).to_have_attribute(
                "data-match", "true" if expect_match else "false", timeout=60_000
            )
            await expect(agent.locator("#verify-ref-img")).to_be_visible()
            await expect(agent.locator("#verify-live-img")).to_be_visible()
            if expect_match:
                await expect(result).to_have_attribute("data-liveness", "true")
                await agent.click("#verify-approve")
                await expect(
                    customer.locator("#verify-outcome[data-outcome='verified']")
                ).to_have_count(1, timeout=10_000)
            else:
                await agent.fill("#verify-reason", "the face does not match the photo on file")
                await agent.click("#verify-reject")
                await expect(
                    customer.locator("#verify-outcome[data-outcome='rejected']")
                ).to_have_count(1, timeout=10_000)
        finally:
            await browser.close()
    async with db.sessions() as session:
        contact = await session.scalar(select(Contact))
    assert contact is not None
    assert (contact.verified_at is not None) is expect_match
