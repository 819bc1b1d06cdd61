"""Server-side WebRTC media for video calls: relay, recording, identity-check tap.

Entry points for the websocket layer: :class:`MediaManager` (one per server),
:class:`MediaSession` (one per call), :class:`LatestFrameTap` (``session.tap``)
and :mod:`.turn` for the ICE server list handed to browsers.
"""

from .recorder import RecordingInfo
from .session import (
    MediaConfig,
    MediaError,
    MediaManager,
    MediaSession,
    MediaStateError,
    NegotiationError,
    Role,
)
from .tap import LatestFrameTap, TapClosedError, TapFrame
from .turn import IceConfig, TurnCredentials, browser_ice_servers, server_ice_servers

__all__ = [
    "IceConfig",
    "LatestFrameTap",
    "MediaConfig",
    "MediaError",
    "MediaManager",
    "MediaSession",
    "MediaStateError",
    "NegotiationError",
    "RecordingInfo",
    "Role",
    "TapClosedError",
    "TapFrame",
    "TurnCredentials",
    "browser_ice_servers",
    "server_ice_servers",
]
