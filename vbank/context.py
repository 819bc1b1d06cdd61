"""What the running application holds: settings, database, password hasher.

Handlers reach it through ``request.app[SERVICES]``; tests build it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from vbank.auth.passwords import Passwords
from vbank.config import Settings
from vbank.db import Database
from vbank.http.access import Access, Handler

if TYPE_CHECKING:
    from vbank.realtime import Realtime


@dataclass
class Services:
    settings: Settings
    db: Database
    passwords: Passwords
    realtime: Realtime = field(init=False)
    access: dict[Handler, Access] = field(default_factory=dict)
    shutting_down: bool = False


SERVICES = web.AppKey("services", Services)
