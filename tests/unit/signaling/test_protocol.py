"""The websocket protocol: every message type parses, every kind of bad input gets the
right error code, and hostile input is rejected cheaply without echoing it back."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from signaling import protocol as p
from signaling.protocol import ErrorCode, ProtocolError, parse_client_message
from vbank.trading.operations import LANGS, AccountView, card_hash, parse_operation, render

# Smallest description validate_sdp accepts (full browser/aiortc SDPs: test_sdp.py).
CHROME_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "a=ice-ufrag:EsAw",
        "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
        "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24",
        "a=setup:actpass",
        "",
    ]
)

VALID: dict[str, dict[str, Any]] = {
    "hello": {"resume": {"c-1": 12, "c-2": 0}},
    "contact.start": {"skill": "cards", "text": "My card was swallowed", "client_id": "k1"},
    "chat.send": {"contact_id": "c-1", "client_id": "m-1", "text": "Hello 👋\nsecond line"},
    "chat.read": {"contact_id": "c-1", "up_to_seq": 7},
    "contact.close": {"contact_id": "c-1"},
    "contact.transfer": {"contact_id": "c-1", "to_skill": "wealth"},
    "agent.status": {"status": "available", "capacity": 3},
    "video.request": {"contact_id": "c-1"},
    "video.consent": {"contact_id": "c-1", "accept": True, "consent_version": "2024-06.1"},
    "video.offer": {"contact_id": "c-1", "sdp": CHROME_OFFER},
    "video.answer": {"contact_id": "c-1", "sdp": CHROME_OFFER.replace("actpass", "active")},
    "video.ice": {
        "contact_id": "c-1",
        "candidate": "candidate:1 1 udp 2113937151 10.0.0.2 51234 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    },
    "video.hangup": {"contact_id": "c-1"},
    "ping": {},
    "verify.start": {"contact_id": "c-1", "reference": "document"},
    "verify.capture_document": {"contact_id": "c-1"},
    "verify.cancel": {"contact_id": "c-1"},
    "verify.decide": {"contact_id": "c-1", "attempt_id": "a1", "approve": False, "reason": "no"},
    "trade.draft": {
        "contact_id": "c-1",
        "operation": {"kind": "own_transfer", "amount_minor": 100, "currency": "CNY"},
    },
    "trade.withdraw": {"contact_id": "c-1", "draft_id": "d1"},
    "trade.confirm": {"contact_id": "c-1", "draft_id": "d1", "card_hash": "ab" * 32},
    "trade.reject": {"contact_id": "c-1", "draft_id": "d1", "reason": "not now"},
}


def frame(msg_type: str, **fields: Any) -> str:
    return json.dumps({"v": 1, "type": msg_type, "id": "m42", **fields})


def error_of(raw: str | bytes, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw, **kwargs)
    assert len(info.value.message) <= 200
    return info.value


def test_every_client_type_has_an_example() -> None:
    assert set(VALID) == p.CLIENT_MESSAGE_TYPES


@pytest.mark.parametrize("msg_type", sorted(VALID))
def test_valid_messages_parse_to_their_model(msg_type: str) -> None:
    msg = parse_client_message(frame(msg_type, **VALID[msg_type]))
    assert msg.type == msg_type
    assert msg.v == 1
    assert msg.id == "m42"
    dumped = msg.model_dump()
    for key, value in VALID[msg_type].items():
        assert dumped[key] == value


def test_bytes_input_and_optional_fields() -> None:
    msg = parse_client_message(b'{"v":1,"type":"contact.start","skill":"accounts"}')
    assert isinstance(msg, p.ContactStart)
    assert msg.id is None and msg.text is None and msg.client_id is None
    ice = parse_client_message('{"v":1,"type":"video.ice","contact_id":"c","candidate":""}')
    assert isinstance(ice, p.VideoIce) and ice.sdpMid is None and ice.sdpMLineIndex is None


def test_transfer_to_agent() -> None:
    msg = parse_client_message(frame("contact.transfer", contact_id="c1", to_agent_id="a-7"))
    assert isinstance(msg, p.ContactTransfer)
    assert (msg.to_agent_id, msg.to_skill) == ("a-7", None)


# ------------------------------------------------------------------ size, encoding, JSON


def test_oversized_is_rejected_before_json_parsing() -> None:
    # Not JSON at all: if it were parsed first this would be bad_json.
    assert error_of(b"{" * (64 * 1024 + 1)).code is ErrorCode.TOO_LARGE
    assert error_of("x" * 101, max_bytes=100).code is ErrorCode.TOO_LARGE


def test_size_is_counted_in_utf8_bytes_for_text_frames() -> None:
    raw = json.dumps({"v": 1, "type": "ping", "x": "é" * 60}, ensure_ascii=False)
    assert len(raw) < 120 < len(raw.encode())
    assert error_of(raw, max_bytes=120).code is ErrorCode.TOO_LARGE
    assert error_of(raw.encode(), max_bytes=120).code is ErrorCode.TOO_LARGE


def test_exactly_max_bytes_is_allowed() -> None:
    raw = '{"v":1,"type":"ping"}'
    assert isinstance(parse_client_message(raw, max_bytes=len(raw)), p.Ping)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v":1,"type":"ping","x":"\xff"}',
        b"\xc3\x28",
        b'{"v":1,"type":"chat.send","text":"\xed\xa0\x80"}',  # UTF-8 encoded surrogate
    ],
)
def test_invalid_utf8_is_bad_json(raw: bytes) -> None:
    assert error_of(raw).code is ErrorCode.BAD_JSON


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "{",
        "{'v': 1}",
        '{"v":1,"type":"ping",}',
        '{"v":1,"type":"ping","x":NaN}',
        '{"v":1,"type":"ping","x":Infinity}',
        '{"v":1,"v":1,"type":"ping"}',  # duplicate keys are ambiguous
        '{"v":1,"type":"ping","x":' + "9" * 5000 + "}",  # int too large to convert
        '\ufeff{"v":1,"type":"ping"}',
    ],
)
def test_malformed_json_is_bad_json(raw: str) -> None:
    assert error_of(raw).code is ErrorCode.BAD_JSON


@pytest.mark.parametrize("raw", ["[]", '"ping"', "1", "null", "true", '[{"v":1}]'])
def test_non_object_is_invalid_message(raw: str) -> None:
    assert error_of(raw).code is ErrorCode.INVALID_MESSAGE


def test_nesting_bomb_is_rejected_quickly() -> None:
    depth = 30_000
    raw = '{"v":1,"type":"ping","x":' + "[" * depth + "]" * depth + "}"
    start = time.perf_counter()
    err = error_of(raw)
    assert err.code is ErrorCode.BAD_JSON
    assert "nested" in err.message
    assert time.perf_counter() - start < 0.5


def test_unbalanced_nesting_bomb_is_rejected() -> None:
    assert error_of("[" * 60_000).code is ErrorCode.BAD_JSON
    assert error_of('{"a":' * 10_000).code is ErrorCode.BAD_JSON


def test_depth_limit_boundary() -> None:
    def nested(depth: int) -> str:  # total depth = 1 (envelope) + depth
        return '{"v":1,"type":"ping","x":' + "[" * depth + "]" * depth + "}"

    # Within the limit the JSON parses and the schema rejects the unknown field.
    assert error_of(nested(p.MAX_JSON_DEPTH - 1)).code is ErrorCode.INVALID_MESSAGE
    assert error_of(nested(p.MAX_JSON_DEPTH)).code is ErrorCode.BAD_JSON


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '[{"\\"' * 500
    msg = parse_client_message(frame("chat.send", contact_id="c", client_id="k", text=text))
    assert isinstance(msg, p.ChatSend) and msg.text == text


# ------------------------------------------------------------------ envelope


@pytest.mark.parametrize("version", [None, 0, 2, "1", 1.0, True, [1]])
def test_missing_or_unknown_version(version: object) -> None:
    obj: dict[str, object] = {"type": "ping", "id": "r1"}
    if version is not None:
        obj["v"] = version
    err = error_of(json.dumps(obj))
    assert err.code is ErrorCode.UNSUPPORTED_VERSION
    assert err.ref_id == "r1"


def test_missing_type_is_invalid_message() -> None:
    err = error_of('{"v":1,"id":"r2"}')
    assert err.code is ErrorCode.INVALID_MESSAGE
    assert "type" in err.message and err.ref_id == "r2"


@pytest.mark.parametrize("msg_type", ["nope", "CHAT.SEND", "", 5, None, ["ping"], "welcome", "ack"])
def test_unknown_type(msg_type: object) -> None:
    raw = json.dumps({"v": 1, "type": msg_type})
    expected = ErrorCode.INVALID_MESSAGE if msg_type is None else ErrorCode.UNKNOWN_TYPE
    assert error_of(raw).code is expected


def test_unknown_type_is_not_echoed() -> None:
    err = error_of(json.dumps({"v": 1, "type": "<script>" + "z" * 1000}))
    assert err.code is ErrorCode.UNKNOWN_TYPE
    assert "script" not in err.message and "zzz" not in err.message


def test_ref_id_only_when_the_id_is_well_formed() -> None:
    assert error_of('{"v":1,"type":"nope","id":"ok-1"}').ref_id == "ok-1"
    assert error_of(json.dumps({"v": 1, "type": "nope", "id": "x" * 65})).ref_id is None
    assert error_of('{"v":1,"type":"nope","id":"has space"}').ref_id is None
    assert error_of('{"v":1,"type":"nope","id":7}').ref_id is None


# ------------------------------------------------------------------ schema


@pytest.mark.parametrize(
    ("msg_type", "fields", "field_name"),
    [
        ("ping", {"extra": 1}, "extra"),
        ("ping", {"id": "x" * 65}, "id"),
        ("ping", {"id": 5}, "id"),
        ("chat.send", {"contact_id": "c", "client_id": "k"}, "text"),
        ("chat.send", {"contact_id": "c", "client_id": "k", "text": ""}, "text"),
        ("chat.send", {"contact_id": "c", "client_id": "k", "text": "   \n "}, "text"),
        ("chat.send", {"contact_id": "c", "client_id": "k", "text": "a\x00b"}, "text"),
        ("chat.send", {"contact_id": "c", "client_id": "k", "text": "\ud800"}, "text"),
        ("chat.send", {"contact_id": "c", "client_id": "k", "text": 5}, "text"),
        ("chat.send", {"contact_id": "", "client_id": "k", "text": "hi"}, "contact_id"),
        ("chat.send", {"contact_id": "c/../x", "client_id": "k", "text": "hi"}, "contact_id"),
        ("chat.send", {"contact_id": "c", "client_id": None, "text": "hi"}, "client_id"),
        ("chat.read", {"contact_id": "c", "up_to_seq": "5"}, "up_to_seq"),
        ("chat.read", {"contact_id": "c", "up_to_seq": 5.0}, "up_to_seq"),
        ("chat.read", {"contact_id": "c", "up_to_seq": True}, "up_to_seq"),
        ("chat.read", {"contact_id": "c", "up_to_seq": -1}, "up_to_seq"),
        ("chat.read", {"contact_id": "c", "up_to_seq": 2**60}, "up_to_seq"),
        ("contact.start", {"skill": "Cards"}, "skill"),
        ("contact.start", {"skill": "x" * 33}, "skill"),
        ("agent.status", {"status": "busy"}, "status"),
        ("agent.status", {"status": "away", "capacity": 0}, "capacity"),
        ("agent.status", {"status": "away", "capacity": 11}, "capacity"),
        ("agent.status", {"status": "away", "capacity": True}, "capacity"),
        ("video.consent", {"contact_id": "c", "accept": "yes", "consent_version": "1"}, "accept"),
        ("video.consent", {"contact_id": "c", "accept": 1, "consent_version": "1"}, "accept"),
        ("video.consent", {"contact_id": "c", "accept": True}, "consent_version"),
        ("video.ice", {"contact_id": "c", "candidate": "x", "sdpMLineIndex": 99}, "sdpMLineIndex"),
        ("video.ice", {"contact_id": "c", "candidate": "a\nb"}, "candidate"),
        ("video.offer", {"contact_id": "c", "sdp": "v=0" + "x" * 40_000}, "sdp"),
        ("hello", {"resume": {"c": -1}}, "resume"),
        ("hello", {"resume": {f"c{i}": 1 for i in range(33)}}, "resume"),
        ("hello", {"resume": [["c", 1]]}, "resume"),
    ],
)
def test_schema_violations_name_the_field(
    msg_type: str, fields: dict[str, Any], field_name: str
) -> None:
    err = error_of(json.dumps({"v": 1, "type": msg_type, **fields}))
    assert err.code is ErrorCode.INVALID_MESSAGE
    assert err.message.startswith(field_name)


def test_chat_text_limit_is_4000_characters() -> None:
    ok = parse_client_message(frame("chat.send", contact_id="c", client_id="k", text="é" * 4000))
    assert isinstance(ok, p.ChatSend)
    err = error_of(frame("chat.send", contact_id="c", client_id="k", text="A" * 4001))
    assert err.code is ErrorCode.INVALID_MESSAGE
    assert "AAAA" not in err.message


def test_huge_unknown_field_name_is_not_echoed() -> None:
    err = error_of(json.dumps({"v": 1, "type": "ping", "Q" * 50_000: 1}))
    assert err.code is ErrorCode.INVALID_MESSAGE
    assert err.message.count("Q") <= 40


@pytest.mark.parametrize("fields", [{}, {"to_agent_id": "a1", "to_skill": "cards"}])
def test_transfer_needs_exactly_one_target(fields: dict[str, str]) -> None:
    err = error_of(frame("contact.transfer", contact_id="c", **fields))
    assert err.code is ErrorCode.INVALID_MESSAGE
    assert "exactly one" in err.message


def test_offer_with_bad_sdp_is_bad_sdp_with_ref_id() -> None:
    err = error_of(frame("video.offer", contact_id="c", sdp="hello"))
    assert err.code is ErrorCode.BAD_SDP
    assert err.ref_id == "m42"


def test_answer_sdp_is_checked_as_an_answer() -> None:
    err = error_of(frame("video.answer", contact_id="c", sdp=CHROME_OFFER))  # actpass
    assert err.code is ErrorCode.BAD_SDP


def test_models_are_immutable() -> None:
    msg = parse_client_message(frame("ping"))
    with pytest.raises(ValidationError):
        msg.id = "other"  # type: ignore[misc]


# ------------------------------------------------------------------ fuzzing

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children)
    ),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_input_only_ever_raises_protocol_error(raw: bytes | str) -> None:
    try:
        parse_client_message(raw)
    except ProtocolError as err:
        assert err.code in set(ErrorCode)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(sorted(VALID)),
    st.dictionaries(
        st.sampled_from(["contact_id", "text", "id", "skill", "sdp", "x"]), json_values
    ),
)
def test_arbitrary_fields_only_ever_raise_protocol_error(
    msg_type: str, fields: dict[str, Any]
) -> None:
    raw = json.dumps({"v": 1, "type": msg_type, **fields})
    try:
        msg = parse_client_message(raw)
    except ProtocolError as err:
        assert err.code in {ErrorCode.INVALID_MESSAGE, ErrorCode.BAD_SDP}
    else:
        assert msg.type == msg_type


# ------------------------------------------------------------------ server messages

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
_ACCOUNTS = [AccountView(1, "VB000000001001", "current", "CNY")]
_PAYEE = parse_operation(
    {
        "kind": "payee_transfer",
        "from_account": "VB000000001001",
        "payee_name": "王小明",
        "payee_account": "VB000000009999",
        "amount_minor": 123_456,
        "currency": "CNY",
    }
)
_CARDS = {lang: render(_PAYEE, _ACCOUNTS, lang) for lang in LANGS}  # real rendered cards
SERVER_EXAMPLES: list[p.ServerMessage] = [
    p.Welcome(user_id="u1", role="customer"),
    p.Ack(id="m42", seq=8, contact_id="c1"),
    p.ErrorMessage(code=ErrorCode.RATE_LIMITED, message="slow down", ref_id="m42"),
    p.QueuePosition(contact_id="c1", position=3, estimated_wait_s=120),
    p.ContactAssigned(contact_id="c1", skill="cards", agent_id="a1", agent_name="Ana"),
    p.ChatMessage(contact_id="c1", seq=8, sender="agent", text="Hi", client_id="k", ts=NOW),
    p.ContactClosed(contact_id="c1", reason="agent"),
    p.VideoRequested(contact_id="c1", by="agent"),
    p.VideoConsentRequired(contact_id="c1", consent_version="v3", consent_text="We record…"),
    p.VideoState(contact_id="c1", state="live"),
    p.ServerVideoOffer(contact_id="c1", sdp=CHROME_OFFER),
    p.ServerVideoAnswer(contact_id="c1", sdp=CHROME_OFFER),
    p.VideoEnded(contact_id="c1", reason="hangup"),
    p.Pong(id="m42"),
    p.Presence(contact_id="c1", role="agent", online=False),
    p.VerifyProgress(
        contact_id="c1",
        attempt_id="a1",
        state="running",
        face=True,
        guidance=["move_closer"],
        steps=[p.VerifyStep(step="blink", status="current")],
        good_frames=2,
        remaining_s=12.5,
    ),
    p.VerifyReference(contact_id="c1", source="document", ok=False, code="no_face"),
    p.VerifyResult(
        contact_id="c1",
        attempt_id="a1",
        match=True,
        distance=0.31,
        threshold=0.5,
        meaning="at 0.5, 0.1 % false accepts",
        liveness_passed=True,
    ),
    p.VerifyOutcome(contact_id="c1", attempt_id="a1", outcome="verified", at=NOW),
    p.TradeCard(
        contact_id="c1",
        draft_id="d1",
        kind="payee_transfer",
        state="pending",
        step_up=True,
        expires_at=NOW,
        cards={lang: p.Card.model_validate(card) for lang, card in _CARDS.items()},
        hashes={lang: card_hash(card) for lang, card in _CARDS.items()},
        reason="step_up_required",
    ),
    p.AccountsBalances(
        contact_id="c1",
        accounts=[p.AccountBalance(number="VB1", name="current", currency="CNY", balance_minor=5)],
    ),
]


def test_every_server_type_has_an_example() -> None:
    assert {m.type for m in SERVER_EXAMPLES} == p.SERVER_MESSAGE_TYPES


@pytest.mark.parametrize("message", SERVER_EXAMPLES, ids=lambda m: m.type)
def test_server_messages_round_trip(message: p.ServerMessage) -> None:
    text = p.serialize_server_message(message)
    obj = json.loads(text)
    assert obj["v"] == 1 and obj["type"] == message.type
    assert "\n" not in text  # one frame, one line
    assert p.parse_server_message(text) == message


def test_chat_message_timestamp_is_iso_utc() -> None:
    msg = p.ChatMessage(contact_id="c1", seq=1, sender="customer", text="x", ts=NOW)
    assert json.loads(p.serialize_server_message(msg))["ts"] == "2024-06-01T12:00:00Z"


def test_protocol_error_to_message() -> None:
    err = ProtocolError(ErrorCode.FORBIDDEN, "no" * 200, ref_id="m1")
    obj = json.loads(p.serialize_server_message(err.to_message()))
    assert obj == {
        "v": 1,
        "type": "error",
        "code": "forbidden",
        "message": ("no" * 200)[:200],
        "ref_id": "m1",
        "reason": None,
    }


def test_error_codes_are_the_documented_set() -> None:
    assert {c.value for c in ErrorCode} == {
        "bad_json",
        "too_large",
        "unknown_type",
        "invalid_message",
        "unsupported_version",
        "forbidden",
        "not_found",
        "rate_limited",
        "out_of_order",
        "bad_sdp",
        "refused",
        "internal",
    }


# ------------------------------------------------------------- chat frames built without models

idents = st.from_regex(p._ID_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 64)
utc_times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=300)
@given(
    contact_id=idents,
    seq=st.integers(1, 2**53 - 1),
    sender=st.sampled_from(["customer", "agent", "system"]),
    text=st.text(min_size=1, max_size=80),
    client_id=st.none() | idents,
    ts=utc_times,
)
def test_chat_message_json_is_the_models_serialization(
    contact_id: str, seq: int, sender: str, text: str, client_id: str | None, ts: datetime
) -> None:
    """The hot path's hand-built frame is byte for byte what the validated model gives."""
    try:
        model = p.ChatMessage(
            contact_id=contact_id,
            seq=seq,
            sender=sender,  # type: ignore[arg-type]
            text=text,
            client_id=client_id,
            ts=ts,
        )
    except ValidationError:  # text the protocol refuses is never stored, so never sent
        return
    built = p.chat_message_json(contact_id, seq, sender, text, client_id, ts)
    assert built == p.serialize_server_message(model)
    assert p.parse_server_message(built) == model


@settings(max_examples=200)
@given(message_id=idents, seq=st.integers(1, 2**53 - 1), contact_id=idents, ts=utc_times)
def test_chat_ack_json_is_the_models_serialization(
    message_id: str, seq: int, contact_id: str, ts: datetime
) -> None:
    model = p.Ack(id=message_id, seq=seq, contact_id=contact_id, ts=ts)
    built = p.chat_ack_json(message_id, seq, contact_id, ts)
    assert built == p.serialize_server_message(model)
    assert p.parse_server_message(built) == model


def test_hand_built_chat_frames_refuse_a_time_that_is_not_utc() -> None:
    paris = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=1)))
    with pytest.raises(ValueError, match="UTC"):
        p.chat_ack_json("m1", 1, "c1", paris)
    with pytest.raises(ValueError, match="UTC"):
        p.chat_message_json("c1", 1, "agent", "hi", None, datetime(2026, 1, 1))
