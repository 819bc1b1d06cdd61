"""Headless Chromium (Debian's package) driven by Playwright against a live server on loopback."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, async_playwright

CHROMIUM = os.environ.get("VBANK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FAKE_CAMERA = Path(__file__).resolve().parents[1] / "data" / "camera"

BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_args(camera_file: Path | None = None) -> list[str]:
    args = list(BASE_ARGS)
    if camera_file is not None:
        args += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera_file}",
        ]
    return args


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run scripts/system-deps.sh")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args())
        yield b
        await b.close()


@pytest.fixture
async def live_server(aiohttp_server: Any, app: web.Application) -> TestServer:
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    return server


def base_url(server: TestServer) -> str:
    return f"http://127.0.0.1:{server.port}"
