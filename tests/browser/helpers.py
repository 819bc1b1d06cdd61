"""Small helpers for browser tests: sign in through the page, check that video plays."""

from __future__ import annotations

from playwright.async_api import BrowserContext, Page, expect

from tests.conftest import TEST_PASSWORD


async def signed_in_page(context: BrowserContext, base: str, username: str, role: str) -> Page:
    page = await context.new_page()
    await page.goto(base + "/signin")
    await expect(page.locator("body[data-ready='true']")).to_have_count(1)
    await page.fill("#username", username)
    await page.fill("#password", TEST_PASSWORD)
    await page.click("#signin-submit")
    await page.wait_for_url(f"**/{role}")
    if role in ("customer", "agent"):  # the pages that hold a websocket
        await expect(page.locator("body[data-ws='open']")).to_have_count(1, timeout=15_000)
    else:
        await expect(page.locator("body[data-ready='true']")).to_have_count(1)
    return page


PIXEL_SUM_JS = """(sel) => {
  const v = document.querySelector(sel);
  if (!v || !v.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = 64; c.height = 48;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0, 64, 48);
  const d = g.getImageData(0, 0, 64, 48).data;
  let s = 0;
  for (let i = 0; i < d.length; i += 4) s += d[i] + 2 * d[i + 1] + d[i + 2];
  return [v.videoWidth, v.videoHeight, s];
}"""


async def assert_video_plays(page: Page, selector: str, seconds: float = 1.5) -> tuple[int, int]:
    """videoWidth > 0 and the pixels change over time (frames really arrive)."""
    await page.wait_for_function(
        "(sel) => { const v = document.querySelector(sel); return v && v.videoWidth > 0; }",
        arg=selector,
        timeout=20_000,
    )
    first = await page.evaluate(PIXEL_SUM_JS, selector)
    await page.wait_for_timeout(int(seconds * 1000))
    second = await page.evaluate(PIXEL_SUM_JS, selector)
    assert first and second, "video element has no frames"
    assert first[2] != second[2], f"{selector} shows a frozen picture"
    return int(second[0]), int(second[1])
