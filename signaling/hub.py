"""Who is connected: every signed-in user's open websockets, and fan-out to them.

Pure of aiohttp: a connection is anything with ``send_str``. A user may have several tabs;
a message for a user goes to all of them. A connection that fails to send is dropped, it
never blocks the others.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Protocol

from signaling.protocol import ServerMessage, serialize_server_message

logger = logging.getLogger(__name__)


class Connection(Protocol):
    async def send_str(self, data: str) -> None: ...


class Hub:
    def __init__(self) -> None:
        self._by_user: dict[int, set[Connection]] = defaultdict(set)

    def add(self, user_id: int, conn: Connection) -> bool:
        """Register a connection; True if it is the user's first."""
        first = not self._by_user.get(user_id)
        self._by_user[user_id].add(conn)
        return first

    def remove(self, user_id: int, conn: Connection) -> bool:
        """Forget a connection; True if the user has none left."""
        conns = self._by_user.get(user_id)
        if conns is None:
            return False
        conns.discard(conn)
        if not conns:
            del self._by_user[user_id]
            return True
        return False

    def online(self, user_id: int) -> bool:
        return bool(self._by_user.get(user_id))

    def connections(self) -> int:
        return sum(len(c) for c in self._by_user.values())

    async def send(
        self, user_id: int | None, message: ServerMessage | str, *, skip: Connection | None = None
    ) -> int:
        """Send to every connection of a user but ``skip``; returns how many got it.
        ``message`` is a frame, or its JSON text already serialized (the chat hot path)."""
        if user_id is None:
            return 0
        conns = [c for c in self._by_user.get(user_id, ()) if c is not skip]
        if not conns:
            return 0
        text = message if isinstance(message, str) else serialize_server_message(message)
        sent = 0
        for conn in conns:
            try:
                await conn.send_str(text)
                sent += 1
            except (ConnectionError, RuntimeError) as exc:
                logger.info(
                    "dropping a dead connection of user %s: %s", user_id, type(exc).__name__
                )
                self.remove(user_id, conn)
        return sent
