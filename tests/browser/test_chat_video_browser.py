"""End to end in headless Chromium: queue, routing, chat both ways, escalation to video with
consent through our media server, chat during video, hang-up, recording on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import async_playwright, expect

from tests.browser.conftest import CHROMIUM, FAKE_CAMERA, base_url, chromium_args
from tests.browser.helpers import assert_video_plays, signed_in_page
from tests.conftest import MakeUser
from vbank.config import Settings
from vbank.roles import Role

pytestmark = [
    pytest.mark.browser,
    pytest.mark.realtime,
    pytest.mark.flaky(reruns=2, reruns_delay=2),
]

CAMERA = FAKE_CAMERA / "liveportrait_d18_480x480.mjpeg"


async def test_chat_then_video_between_customer_and_agent(
    live_server: TestServer, make_user: MakeUser, settings: Settings
) -> None:
    await make_user("cust", Role.CUSTOMER, display_name="Kate Customer")
    await make_user("ana", Role.AGENT, skills=("accounts",), display_name="Ana Agent")
    base = base_url(live_server)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(CAMERA)
        )
        try:
            cust_ctx = await browser.new_context(locale="en")
            agent_ctx = await browser.new_context(locale="en")
            customer = await signed_in_page(cust_ctx, base, "cust", "customer")
            agent = await signed_in_page(agent_ctx, base, "ana", "agent")

            # queued first (the agent is away): position shown
            await customer.select_option("#skill", "accounts")
            await customer.click("#start-contact")
            await expect(customer.locator("#queue-position[data-position='1']")).to_have_count(1)

            # the agent becomes available: routed to them
            await agent.select_option("#status-select", "available")
            await expect(customer.locator("#agent-name")).to_have_text("Ana Agent", timeout=10_000)
            item = agent.locator(".contact-item").first
            await expect(item).to_have_count(1)
            await item.click()

            # chat both ways
            await customer.fill("#chat-input", "Hello, I want to move money")
            await customer.click("#chat-send")
            await expect(
                agent.locator("#chat-log .chat-msg[data-sender='customer']")
            ).to_contain_text(["Hello, I want to move money"], timeout=10_000)
            await agent.fill("#chat-input", "Sure, let us verify you by video first")
            await agent.click("#chat-send")
            await expect(
                customer.locator("#chat-log .chat-msg[data-sender='agent']")
            ).to_contain_text(["Sure, let us verify you by video first"])

            # escalate: the customer asks, the agent accepts, the customer consents
            await customer.click("#video-request")
            await expect(agent.locator("#video-state[data-state='requested']")).to_have_count(1)
            await agent.click("#video-request")
            dialog = customer.locator("#consent-dialog")
            await expect(dialog).to_be_visible()
            await expect(customer.locator("#consent-text")).to_contain_text("record")
            await customer.click("#consent-accept")
            await expect(agent.locator("#video-state[data-state='live']")).to_have_count(
                1, timeout=20_000
            )
            width, height = await assert_video_plays(agent, "#remote-video")
            assert (width, height) == (480, 480)
            await assert_video_plays(customer, "#remote-video")

            # chat still works during video
            await customer.fill("#chat-input", "I can see you")
            await customer.click("#chat-send")
            await expect(
                agent.locator("#chat-log .chat-msg[data-sender='customer']")
            ).to_have_count(2)
            await agent.wait_for_timeout(2000)

            # the agent hangs up; both sides leave video, the chat remains
            await agent.click("#video-hangup")
            await expect(customer.locator("#video-state")).not_to_have_attribute(
                "data-state", "live", timeout=10_000
            )
            await expect(customer.locator("#chat-log .chat-msg")).to_have_count(3)
        finally:
            await browser.close()

    recordings = [p for p in Path(settings.data_dir, "recordings").rglob("*") if p.is_file()]
    assert len(recordings) == 2, recordings
    assert all(p.stat().st_size > 10_000 for p in recordings)
