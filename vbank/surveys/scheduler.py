"""The periodic task that sends survey links after the delay and expires dead links.

It holds no state of its own: every pass asks the database what is due, and the
conditional updates in :class:`~vbank.surveys.service.Surveys` make running it in several
processes at once safe (each survey is invited once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from vbank.surveys.service import Surveys

logger = logging.getLogger(__name__)


def pass_interval(delay_s: float) -> float:
    """Often enough that a link leaves within about a quarter of the delay, at most 30 s."""
    return max(0.2, min(30.0, delay_s / 4))


class SurveyScheduler:
    def __init__(self, surveys: Surveys, interval_s: float | None = None) -> None:
        self.surveys = surveys
        self.interval_s = interval_s or pass_interval(surveys.policy.delay_s)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.surveys.install()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="survey-scheduler")

    async def stop(self) -> None:
        self.surveys.uninstall()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_once(self) -> tuple[int, int]:
        """One pass: (surveys invited, surveys expired)."""
        return await self.surveys.invite_due(), await self.surveys.expire_stale()

    async def _run(self) -> None:
        while True:
            try:
                invited, expired = await self.run_once()
                if invited or expired:
                    logger.info("survey pass: %d invited, %d expired", invited, expired)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("survey pass failed; retrying next interval")
            await asyncio.sleep(self.interval_s)
