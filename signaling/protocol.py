"""The websocket JSON protocol between browsers and the signalling server.

One websocket per signed-in user carries chat, routing and WebRTC signalling for all of
that user's contacts. Every frame is a JSON object (the *envelope*)::

    {"v": 1, "type": "chat.send", "id": "c-17", ...fields of that type...}

This module is pure: it turns untrusted text into typed, bounded pydantic models (or a
:class:`ProtocolError` carrying the :class:`ErrorCode` to send back) and turns server models
into JSON text. It never touches sockets. See ``docs/signalling.md`` for the full reference.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, NoReturn, cast

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CLIENT_MESSAGE_TYPES",
    "DEFAULT_MAX_BYTES",
    "MAX_CHAT_TEXT",
    "MAX_JSON_DEPTH",
    "MAX_SDP_BYTES",
    "PROTOCOL_VERSION",
    "SERVER_MESSAGE_TYPES",
    "SUPPORTED_VERSIONS",
    "Ack",
    "AgentStatus",
    "ChatMessage",
    "ChatRead",
    "ChatSend",
    "ClientMessage",
    "ContactAssigned",
    "ContactClose",
    "ContactCloseReason",
    "ContactClosed",
    "ContactStart",
    "ContactTransfer",
    "ErrorCode",
    "ErrorMessage",
    "Hello",
    "Ping",
    "Pong",
    "Presence",
    "ProtocolError",
    "QueuePosition",
    "Role",
    "SenderRole",
    "ServerMessage",
    "ServerVideoAnswer",
    "ServerVideoOffer",
    "VideoAnswer",
    "VideoConsent",
    "VideoConsentRequired",
    "VideoEndReason",
    "VideoEnded",
    "VideoHangup",
    "VideoIce",
    "VideoOffer",
    "VideoRequest",
    "VideoRequested",
    "VideoState",
    "VideoStateName",
    "Welcome",
    "chat_ack_json",
    "chat_message_json",
    "parse_client_message",
    "parse_server_message",
    "serialize_server_message",
    "validate_sdp",
]

PROTOCOL_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = frozenset({1})
DEFAULT_MAX_BYTES: Final = 64 * 1024
MAX_JSON_DEPTH: Final = 32
MAX_CHAT_TEXT: Final = 4000
MAX_SDP_BYTES: Final = 32 * 1024
MAX_SDP_MEDIA: Final = 16
_MAX_ERROR_TEXT: Final = 200


class ErrorCode(StrEnum):
    """Machine-readable error codes sent in ``error`` frames."""

    BAD_JSON = "bad_json"
    TOO_LARGE = "too_large"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_MESSAGE = "invalid_message"
    UNSUPPORTED_VERSION = "unsupported_version"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    OUT_OF_ORDER = "out_of_order"
    BAD_SDP = "bad_sdp"
    REFUSED = "refused"  # a business rule said no; ``reason`` names which
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A client-visible failure: the server answers it with an ``error`` frame.

    ``message`` is safe to send to the client: it never echoes (large) client input.
    ``ref_id`` is the envelope ``id`` of the offending client message, when known.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        ref_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message[:_MAX_ERROR_TEXT]
        self.ref_id = ref_id
        self.reason = reason

    def to_message(self) -> ErrorMessage:
        """The ``error`` frame to send for this failure."""
        return ErrorMessage(
            code=self.code, message=self.message, ref_id=self.ref_id, reason=self.reason
        )


# --------------------------------------------------------------------------- field types

_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_ID_RE: Final = re.compile(_ID_PATTERN)

# Opaque identifiers (contact, agent, client message ids): short, ASCII, no spaces, so they
# are safe in logs, URLs and error messages.
Ident = Annotated[str, StringConstraints(pattern=_ID_PATTERN, max_length=64)]
Skill = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$", max_length=32)]
ConsentVersion = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$", max_length=32)
]
Seq = Annotated[int, Field(ge=0, le=2**53 - 1)]  # fits a JS number exactly
Role = Literal["customer", "agent"]
SenderRole = Literal["customer", "agent", "system"]
VideoStateName = Literal[
    "none", "requested", "consent_pending", "consented", "negotiating", "live", "ended"
]
VideoEndReason = Literal[
    "hangup", "declined", "ice_failed", "disconnect", "closed", "transfer", "error"
]
ContactCloseReason = Literal["customer", "agent", "timeout", "abandoned", "system"]
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _check_free_text(value: str) -> str:
    """Reject text the rest of the system cannot store or display safely."""
    if _CONTROL_RE.search(value):
        raise ValueError("control characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates smuggled in via \\ud800 escapes
        raise ValueError("invalid unicode (lone surrogate)") from None
    if not value.strip():
        raise ValueError("text must not be blank")
    return value


ChatText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_CHAT_TEXT),
    AfterValidator(_check_free_text),
]
ShortText = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(_check_free_text)
]
Sdp = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SDP_BYTES)]
Reason = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
CardHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
# an operation's fields: short names, strings or integers (amounts in minor units)
OperationFields = Annotated[
    dict[
        Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")],
        Annotated[str, StringConstraints(max_length=80)]
        | Annotated[int, Field(ge=-(2**53), le=2**53)],
    ],
    Field(max_length=12),
]


class _Message(BaseModel):
    """Base of every frame: immutable, strict, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    v: Literal[1] = PROTOCOL_VERSION


class _ClientMessage(_Message):
    id: Ident | None = None


# --------------------------------------------------------------------------- client → server


class Hello(_ClientMessage):
    """First frame after (re)connect. ``resume`` maps contact id → last seen server seq."""

    type: Literal["hello"] = "hello"
    resume: dict[Ident, Seq] = Field(default_factory=dict, max_length=32)


class ContactStart(_ClientMessage):
    """Customer opens a contact for a skill, optionally with a first chat message."""

    type: Literal["contact.start"] = "contact.start"
    skill: Skill
    text: ChatText | None = None
    client_id: Ident | None = None


class ChatSend(_ClientMessage):
    """A chat line; ``client_id`` makes resends after a reconnect idempotent."""

    type: Literal["chat.send"] = "chat.send"
    contact_id: Ident
    client_id: Ident
    text: ChatText


class ChatRead(_ClientMessage):
    """Read receipt: everything up to and including ``up_to_seq`` was displayed."""

    type: Literal["chat.read"] = "chat.read"
    contact_id: Ident
    up_to_seq: Seq


class ContactClose(_ClientMessage):
    type: Literal["contact.close"] = "contact.close"
    contact_id: Ident


class ContactTransfer(_ClientMessage):
    """Agent hands the contact to another agent or back to a skill queue (exactly one)."""

    type: Literal["contact.transfer"] = "contact.transfer"
    contact_id: Ident
    to_agent_id: Ident | None = None
    to_skill: Skill | None = None

    @model_validator(mode="after")
    def _exactly_one_target(self) -> ContactTransfer:
        if (self.to_agent_id is None) == (self.to_skill is None):
            raise ValueError("exactly one of to_agent_id or to_skill is required")
        return self


class AgentStatus(_ClientMessage):
    type: Literal["agent.status"] = "agent.status"
    status: Literal["available", "away"]
    capacity: Annotated[int, Field(ge=1, le=10)] | None = None


class VideoRequest(_ClientMessage):
    type: Literal["video.request"] = "video.request"
    contact_id: Ident


class VideoConsent(_ClientMessage):
    """Customer's answer to ``video.consent_required``, for that exact consent text version."""

    type: Literal["video.consent"] = "video.consent"
    contact_id: Ident
    accept: bool
    consent_version: ConsentVersion


class VideoOffer(_ClientMessage):
    type: Literal["video.offer"] = "video.offer"
    contact_id: Ident
    sdp: Sdp


class VideoAnswer(_ClientMessage):
    type: Literal["video.answer"] = "video.answer"
    contact_id: Ident
    sdp: Sdp


class VideoIce(_ClientMessage):
    """Trickle ICE candidate; field names mirror the browser's ``RTCIceCandidateInit``.

    An empty ``candidate`` means end-of-candidates.
    """

    type: Literal["video.ice"] = "video.ice"
    contact_id: Ident
    candidate: Annotated[str, StringConstraints(max_length=1024, pattern=r"^[\x20-\x7e]*$")]
    sdpMid: Annotated[str, StringConstraints(max_length=32, pattern=r"^[\x21-\x7e]*$")] | None = (
        None
    )
    sdpMLineIndex: Annotated[int, Field(ge=0, le=MAX_SDP_MEDIA - 1)] | None = None


class VideoHangup(_ClientMessage):
    type: Literal["video.hangup"] = "video.hangup"
    contact_id: Ident


class Ping(_ClientMessage):
    type: Literal["ping"] = "ping"


class VerifyStart(_ClientMessage):
    """Agent starts a face-match attempt against the on-file photo or a captured document."""

    type: Literal["verify.start"] = "verify.start"
    contact_id: Ident
    reference: Literal["on_file", "document"] = "on_file"


class VerifyCaptureDocument(_ClientMessage):
    """Agent captures a still of the ID document the customer holds up to the camera."""

    type: Literal["verify.capture_document"] = "verify.capture_document"
    contact_id: Ident


class VerifyCancel(_ClientMessage):
    type: Literal["verify.cancel"] = "verify.cancel"
    contact_id: Ident


class VerifyDecide(_ClientMessage):
    """The agent's decision on a finished attempt; a rejection needs a reason."""

    type: Literal["verify.decide"] = "verify.decide"
    contact_id: Ident
    attempt_id: Ident
    approve: bool
    reason: ShortText | None = None


class TradeDraftRequest(_ClientMessage):
    """Agent prepares an operation for the customer to confirm (see vbank.trading)."""

    type: Literal["trade.draft"] = "trade.draft"
    contact_id: Ident
    operation: OperationFields


class TradeWithdraw(_ClientMessage):
    type: Literal["trade.withdraw"] = "trade.withdraw"
    contact_id: Ident
    draft_id: Ident


class TradeConfirm(_ClientMessage):
    """Customer confirms the card whose hash they were shown (what you see is what you sign)."""

    type: Literal["trade.confirm"] = "trade.confirm"
    contact_id: Ident
    draft_id: Ident
    card_hash: CardHash


class TradeReject(_ClientMessage):
    type: Literal["trade.reject"] = "trade.reject"
    contact_id: Ident
    draft_id: Ident
    reason: ShortText | None = None


ClientMessage = Annotated[
    Hello
    | ContactStart
    | ChatSend
    | ChatRead
    | ContactClose
    | ContactTransfer
    | AgentStatus
    | VideoRequest
    | VideoConsent
    | VideoOffer
    | VideoAnswer
    | VideoIce
    | VideoHangup
    | Ping
    | VerifyStart
    | VerifyCaptureDocument
    | VerifyCancel
    | VerifyDecide
    | TradeDraftRequest
    | TradeWithdraw
    | TradeConfirm
    | TradeReject,
    Field(discriminator="type"),
]

_CLIENT_MODELS: Final[tuple[type[_ClientMessage], ...]] = (
    Hello,
    ContactStart,
    ChatSend,
    ChatRead,
    ContactClose,
    ContactTransfer,
    AgentStatus,
    VideoRequest,
    VideoConsent,
    VideoOffer,
    VideoAnswer,
    VideoIce,
    VideoHangup,
    Ping,
    VerifyStart,
    VerifyCaptureDocument,
    VerifyCancel,
    VerifyDecide,
    TradeDraftRequest,
    TradeWithdraw,
    TradeConfirm,
    TradeReject,
)


def _type_of(model: type[_Message]) -> str:
    default = model.model_fields["type"].default
    assert isinstance(default, str)
    return default


_CLIENT_BY_TYPE: Final[dict[str, type[_ClientMessage]]] = {_type_of(m): m for m in _CLIENT_MODELS}
CLIENT_MESSAGE_TYPES: Final = frozenset(_CLIENT_BY_TYPE)


# --------------------------------------------------------------------------- server → client


class Welcome(_Message):
    """Reply to ``hello``: who the server thinks you are and the limits it enforces."""

    type: Literal["welcome"] = "welcome"
    user_id: Ident
    role: Literal["customer", "agent", "auditor", "supervisor"]
    max_message_bytes: int = DEFAULT_MAX_BYTES
    ping_interval_s: int = 20


class Ack(_Message):
    """Client message ``id`` was processed; ``seq`` and ``ts`` are the chat line it stored,
    if any (the sending connection gets no ``chat.message`` echo of its own line)."""

    type: Literal["ack"] = "ack"
    id: Ident
    seq: Seq | None = None
    contact_id: Ident | None = None
    ts: AwareDatetime | None = None


class ErrorMessage(_Message):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: Annotated[str, StringConstraints(max_length=_MAX_ERROR_TEXT)]
    ref_id: Ident | None = None
    reason: Reason | None = None  # with ``refused``: which rule (e.g. step_up_required)


class QueuePosition(_Message):
    type: Literal["queue.position"] = "queue.position"
    contact_id: Ident
    position: Annotated[int, Field(ge=1)]
    estimated_wait_s: Annotated[int, Field(ge=0)]


class ContactAssigned(_Message):
    """Contact was routed to an agent (sent to both sides; ``customer_name`` only to agents)."""

    type: Literal["contact.assigned"] = "contact.assigned"
    contact_id: Ident
    skill: Skill
    agent_id: Ident
    agent_name: ShortText
    customer_name: ShortText | None = None


class ChatMessage(_Message):
    """A chat line as stored: ``seq`` is gap-free and increasing per contact."""

    type: Literal["chat.message"] = "chat.message"
    contact_id: Ident
    seq: Annotated[int, Field(ge=1, le=2**53 - 1)]
    sender: SenderRole
    text: ChatText
    client_id: Ident | None = None
    ts: AwareDatetime


class ContactClosed(_Message):
    type: Literal["contact.closed"] = "contact.closed"
    contact_id: Ident
    reason: ContactCloseReason


class VideoRequested(_Message):
    type: Literal["video.requested"] = "video.requested"
    contact_id: Ident
    by: Role


class VideoConsentRequired(_Message):
    """Ask the customer to consent to video (and recording) for this text version."""

    type: Literal["video.consent_required"] = "video.consent_required"
    contact_id: Ident
    consent_version: ConsentVersion
    consent_text: Annotated[str, StringConstraints(max_length=MAX_CHAT_TEXT)] | None = None


class VideoState(_Message):
    """Video sub-state of a contact changed (drives both UIs)."""

    type: Literal["video.state"] = "video.state"
    contact_id: Ident
    state: VideoStateName


class ServerVideoOffer(_Message):
    type: Literal["video.offer"] = "video.offer"
    contact_id: Ident
    sdp: Sdp


class ServerVideoAnswer(_Message):
    type: Literal["video.answer"] = "video.answer"
    contact_id: Ident
    sdp: Sdp


class VideoEnded(_Message):
    type: Literal["video.ended"] = "video.ended"
    contact_id: Ident
    reason: VideoEndReason


class Pong(_Message):
    type: Literal["pong"] = "pong"
    id: Ident | None = None


class Presence(_Message):
    """The other party of a contact went offline / came back."""

    type: Literal["presence"] = "presence"
    contact_id: Ident
    role: Role
    online: bool


Guidance = Literal["no_face", "only_you", "move_closer", "more_light", "less_light", "hold_still"]
ChallengeStep = Literal["blink", "turn_left", "turn_right"]
StepStatus = Literal["pending", "current", "passed", "failed"]


class VerifyStep(BaseModel):
    """One liveness challenge step and how far it is."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    step: ChallengeStep
    status: StepStatus


class VerifyProgress(_Message):
    """Live state of an attempt (to both sides): quality guidance and challenge progress."""

    type: Literal["verify.progress"] = "verify.progress"
    contact_id: Ident
    attempt_id: Ident
    state: Literal["running", "finished", "cancelled", "failed"]
    face: bool
    guidance: list[Guidance] = Field(default_factory=list, max_length=6)
    steps: list[VerifyStep] = Field(default_factory=list, max_length=6)
    good_frames: Annotated[int, Field(ge=0)] = 0
    remaining_s: Annotated[float, Field(ge=0)] = 0.0


class VerifyReference(_Message):
    """Which reference an attempt uses, or why a captured document was refused."""

    type: Literal["verify.reference"] = "verify.reference"
    contact_id: Ident
    source: Literal["on_file", "document"]
    ok: bool
    code: ShortText | None = None
    message: ShortText | None = None


class VerifyResult(_Message):
    """The evidence for the agent's decision (agent only)."""

    type: Literal["verify.result"] = "verify.result"
    contact_id: Ident
    attempt_id: Ident
    match: bool
    distance: float | None
    threshold: float
    meaning: Annotated[str, StringConstraints(max_length=400)]
    liveness_passed: bool
    liveness_reasons: list[ShortText] = Field(default_factory=list, max_length=20)
    reference_url: Annotated[str, StringConstraints(max_length=200)] | None = None
    live_url: Annotated[str, StringConstraints(max_length=200)] | None = None


class VerifyOutcome(_Message):
    """The agent's decision: the session is verified (with its time) or not."""

    type: Literal["verify.outcome"] = "verify.outcome"
    contact_id: Ident
    attempt_id: Ident
    outcome: Literal["verified", "rejected"]
    at: AwareDatetime
    reason: ShortText | None = None


TradeState = Literal[
    "pending",
    "confirmed",
    "executed",
    "failed",
    "status_unknown",
    "rejected",
    "withdrawn",
    "expired",
]
CardLine = Annotated[list[Annotated[str, StringConstraints(max_length=200)]], Field(max_length=2)]


class Card(BaseModel):
    """A confirmation card in one language, exactly as rendered by vbank.trading."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    lang: Literal["en", "zh-CN"]
    title: Annotated[str, StringConstraints(max_length=200)]
    lines: list[CardLine] = Field(max_length=8)
    operation: dict[str, str | int]


class TradeCard(_Message):
    """A draft as it stands (sent to both parties on every change)."""

    type: Literal["trade.card"] = "trade.card"
    contact_id: Ident
    draft_id: Ident
    kind: Reason
    state: TradeState
    step_up: bool
    expires_at: AwareDatetime
    cards: dict[Literal["en", "zh-CN"], Card]
    hashes: dict[Literal["en", "zh-CN"], CardHash]
    reason: Reason | None = None
    reference: Annotated[str, StringConstraints(max_length=64)] | None = None


class AccountBalance(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    number: Annotated[str, StringConstraints(max_length=34)]
    name: Annotated[str, StringConstraints(max_length=64)]
    currency: Annotated[str, StringConstraints(min_length=3, max_length=3)]
    balance_minor: int


class AccountsBalances(_Message):
    """The customer's accounts after a change (to the customer and, verified, the agent)."""

    type: Literal["accounts.balances"] = "accounts.balances"
    contact_id: Ident
    accounts: list[AccountBalance] = Field(max_length=64)


ServerMessage = Annotated[
    Welcome
    | Ack
    | ErrorMessage
    | QueuePosition
    | ContactAssigned
    | ChatMessage
    | ContactClosed
    | VideoRequested
    | VideoConsentRequired
    | VideoState
    | ServerVideoOffer
    | ServerVideoAnswer
    | VideoEnded
    | Pong
    | Presence
    | VerifyProgress
    | VerifyReference
    | VerifyResult
    | VerifyOutcome
    | TradeCard
    | AccountsBalances,
    Field(discriminator="type"),
]
_SERVER_ADAPTER: Final[TypeAdapter[ServerMessage]] = TypeAdapter(ServerMessage)
SERVER_MESSAGE_TYPES: Final = frozenset(
    _type_of(m)
    for m in (
        Welcome,
        Ack,
        ErrorMessage,
        QueuePosition,
        ContactAssigned,
        ChatMessage,
        ContactClosed,
        VideoRequested,
        VideoConsentRequired,
        VideoState,
        ServerVideoOffer,
        ServerVideoAnswer,
        VideoEnded,
        Pong,
        Presence,
        VerifyProgress,
        VerifyReference,
        VerifyResult,
        VerifyOutcome,
        TradeCard,
        AccountsBalances,
    )
)


# --------------------------------------------------------------------------- parsing

# A JSON string token (escape-aware, unrolled so the regex engine stays linear).
_JSON_STRING_RE: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET_RE: Final = re.compile(r"[\[\]{}]")


def _too_deep(text: str, limit: int) -> bool:
    """True if the JSON text nests arrays/objects deeper than ``limit``.

    Runs before ``json.loads`` so a nesting bomb never reaches the recursive parser.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _BRACKET_RE.finditer(_JSON_STRING_RE.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Duplicate keys are ambiguous (parsers disagree on which wins): reject them."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKeyError("duplicate key")
    return result


def _reject_constant(name: str) -> NoReturn:
    raise ValueError("NaN/Infinity are not JSON")


#: one decoder for every frame (``json.loads`` with hooks builds a new one per call)
_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_reject_constant
)


def _safe_fragment(value: object, limit: int = 40) -> str:
    """A short printable rendering of a (client-controlled) location component."""
    text = str(value)
    text = "".join(ch if ch.isprintable() and ord(ch) < 0x7F else "?" for ch in text[:limit])
    return text + ("…" if len(str(value)) > limit else "")


def _describe(exc: ValidationError) -> str:
    """First schema error as ``field: reason``, never including the offending input."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    parts = []
    for err in errors[:3]:
        loc = ".".join(_safe_fragment(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return ("; ".join(parts) + more)[:_MAX_ERROR_TEXT]


def parse_client_message(raw: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ClientMessage:
    """Parse and validate one websocket frame from a client.

    Checks, in order (cheapest first, so hostile input is rejected before costly work):
    size, UTF-8, nesting depth, JSON syntax, object-ness, version, type, schema, and for
    ``video.offer``/``video.answer`` the SDP structure. Raises :class:`ProtocolError`.
    """
    if len(raw) > max_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message exceeds {max_bytes} bytes")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.BAD_JSON, "message is not valid UTF-8") from None
    else:
        text = raw
        if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"message exceeds {max_bytes} bytes")

    if _too_deep(text, MAX_JSON_DEPTH):
        raise ProtocolError(ErrorCode.BAD_JSON, f"JSON nested deeper than {MAX_JSON_DEPTH}")
    try:
        obj = _DECODER.decode(text)
    except _DuplicateKeyError:
        raise ProtocolError(ErrorCode.BAD_JSON, "duplicate key in JSON object") from None
    except RecursionError:  # belt and braces: _too_deep should have caught it
        raise ProtocolError(ErrorCode.BAD_JSON, "JSON nested too deeply") from None
    except ValueError:  # JSONDecodeError, NaN, huge integers
        raise ProtocolError(ErrorCode.BAD_JSON, "message is not valid JSON") from None

    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "message must be a JSON object")

    msg_id = obj.get("id")
    ref_id = msg_id if isinstance(msg_id, str) and _ID_RE.match(msg_id) else None

    version = obj.get("v")
    if version is None:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION, "missing protocol version 'v'", ref_id=ref_id
        )
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"unsupported protocol version; supported: {supported}",
            ref_id=ref_id,
        )

    msg_type = obj.get("type")
    if msg_type is None:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "type: Field required", ref_id=ref_id)
    model = _CLIENT_BY_TYPE.get(msg_type) if isinstance(msg_type, str) else None
    if model is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "unknown message type", ref_id=ref_id)

    try:
        message = cast(ClientMessage, model.model_validate(obj, strict=True))
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, _describe(exc), ref_id=ref_id) from None

    if isinstance(message, VideoOffer | VideoAnswer):
        try:
            validate_sdp(message.sdp, "offer" if isinstance(message, VideoOffer) else "answer")
        except ProtocolError as exc:
            raise ProtocolError(exc.code, exc.message, ref_id=ref_id) from None
    return message


def serialize_server_message(message: ServerMessage) -> str:
    """Compact JSON text for one server frame (``None`` fields are sent as ``null``)."""
    return message.model_dump_json()


#: compact JSON with text as is, like pydantic's serializer (one encoder, built once)
_encode_json: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _iso_utc(ts: datetime) -> str:
    """An aware UTC time as pydantic writes it: ISO 8601 with ``Z``."""
    text = ts.isoformat()
    if not text.endswith("+00:00"):
        raise ValueError("chat times are UTC")
    return text[:-6] + "Z"


def chat_message_json(
    contact_id: str, seq: int, sender: str, text: str, client_id: str | None, ts: datetime
) -> str:
    """``serialize_server_message(ChatMessage(...))`` for a line that was validated when
    it was posted, built without the model.

    Why: the two frames of every chat line (this and :func:`chat_ack_json`) were the event
    loop's largest cost after the socket writes (pydantic's ``model_construct`` and
    serializer, about a tenth of the loop in cProfile with 1,000 clients). Tests check
    that both give exactly the bytes of the models' serialization.
    """
    return _encode_json(
        {
            "v": PROTOCOL_VERSION,
            "type": "chat.message",
            "contact_id": contact_id,
            "seq": seq,
            "sender": sender,
            "text": text,
            "client_id": client_id,
            "ts": _iso_utc(ts),
        }
    )


def chat_ack_json(message_id: str, seq: int, contact_id: str, ts: datetime) -> str:
    """``serialize_server_message(Ack(...))`` for a stored chat line (see
    :func:`chat_message_json`)."""
    return _encode_json(
        {
            "v": PROTOCOL_VERSION,
            "type": "ack",
            "id": message_id,
            "seq": seq,
            "contact_id": contact_id,
            "ts": _iso_utc(ts),
        }
    )


def parse_server_message(raw: str | bytes) -> ServerMessage:
    """Parse a server frame (for tests and Python clients); raises ``ValidationError``."""
    return _SERVER_ADAPTER.validate_json(raw, strict=True)


# --------------------------------------------------------------------------- SDP

_SDP_LINE_RE: Final = re.compile(r"[a-z]=[\x20-\x7e]*")
_SDP_MEDIA_RE: Final = re.compile(
    r"m=(?P<media>[a-z]+) (?P<port>\d{1,5})(?:/\d{1,5})? (?P<proto>[A-Za-z0-9/_.-]+)"
    r"(?: [A-Za-z0-9_.-]+)+"
)


def _bad_sdp(message: str) -> NoReturn:
    raise ProtocolError(ErrorCode.BAD_SDP, message)


def validate_sdp(sdp: str, expected_type: Literal["offer", "answer"]) -> None:
    """Light structural check of a browser SDP before handing it to aiortc.

    Not a full RFC 8866 parser: it rejects garbage, oversized or non-WebRTC descriptions
    cheaply so the media layer only sees plausible input. Raises ``ProtocolError(bad_sdp)``.
    """
    if expected_type not in ("offer", "answer"):
        raise ValueError(f"expected_type must be 'offer' or 'answer', not {expected_type!r}")
    if len(sdp) > MAX_SDP_BYTES or len(sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        _bad_sdp(f"SDP exceeds {MAX_SDP_BYTES} bytes")
    text = sdp.replace("\r\n", "\n")
    if "\r" in text:
        _bad_sdp("SDP lines must end with CRLF or LF")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != "v=0":
        _bad_sdp("SDP must start with v=0")
    for number, line in enumerate(lines, start=1):
        if not _SDP_LINE_RE.fullmatch(line):
            _bad_sdp(f"SDP line {number} is not a printable '<letter>=<value>' line")

    first_media = next((i for i, line in enumerate(lines) if line.startswith("m=")), len(lines))
    session = lines[:first_media]
    if not any(line.startswith("o=") for line in session):
        _bad_sdp("SDP session section lacks an o= line")
    if not any(line.startswith("s=") for line in session):
        _bad_sdp("SDP session section lacks an s= line")

    media_lines = [line for line in lines if line.startswith("m=")]
    if len(media_lines) > MAX_SDP_MEDIA:
        _bad_sdp(f"SDP has more than {MAX_SDP_MEDIA} media sections")
    kinds = set()
    for line in media_lines:
        match = _SDP_MEDIA_RE.fullmatch(line)
        if match is None:
            _bad_sdp("SDP has a malformed m= line")
        kinds.add(match.group("media"))
    if not kinds & {"audio", "video"}:
        _bad_sdp("SDP has no audio or video m= line")
    if not any(line.startswith("a=fingerprint:") for line in lines):
        _bad_sdp("SDP lacks a=fingerprint (DTLS is mandatory)")
    if not any(line.startswith("a=ice-ufrag:") for line in lines):
        _bad_sdp("SDP lacks a=ice-ufrag")
    if expected_type == "answer" and "a=setup:actpass" in lines:
        _bad_sdp("an SDP answer must not use a=setup:actpass")
