"""validate_sdp accepts what real WebRTC stacks produce (aiortc, Chromium) and rejects
garbage before it reaches the media layer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from signaling.protocol import (
    MAX_SDP_BYTES,
    ErrorCode,
    ProtocolError,
    VideoOffer,
    parse_client_message,
    validate_sdp,
)

# An offer as Chromium 12x sends it (trimmed codec list; structure and attributes as-is).
CHROME_OFFER_LINES = [
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS 5c6f2c4e-8bb4-4d0a-9a8c-1f0c8b0f2a11",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:EsAw",
    "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:"
    "3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F",
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=sendrecv",
    "a=msid:5c6f2c4e-8bb4-4d0a-9a8c-1f0c8b0f2a11 0b4c5c8e-6c59-4a8e-8d0c-2b8f6f0f4a1d",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:13 CN/8000",
    "a=rtpmap:110 telephone-event/48000",
    "a=rtpmap:126 telephone-event/8000",
    "a=ssrc:3735928559 cname:l8bJ9k1Fh0a2Yb1x",
    "a=ssrc:3735928559 msid:5c6f2c4e-8bb4-4d0a-9a8c-1f0c8b0f2a11 "
    "0b4c5c8e-6c59-4a8e-8d0c-2b8f6f0f4a1d",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:EsAw",
    "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:"
    "3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F",
    "a=setup:actpass",
    "a=mid:1",
    "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=sendrecv",
    "a=msid:5c6f2c4e-8bb4-4d0a-9a8c-1f0c8b0f2a11 9d2c4a1b-0f3e-4c5d-8e7f-1a2b3c4d5e6f",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 goog-remb",
    "a=rtcp-fb:96 transport-cc",
    "a=rtcp-fb:96 ccm fir",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000",
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
    "a=rtpmap:103 rtx/90000",
    "a=fmtp:103 apt=102",
    "a=ssrc-group:FID 2271249208 3425612371",
    "a=ssrc:2271249208 cname:l8bJ9k1Fh0a2Yb1x",
    "a=ssrc:3425612371 cname:l8bJ9k1Fh0a2Yb1x",
]
CHROME_OFFER = "\r\n".join(CHROME_OFFER_LINES) + "\r\n"
CHROME_ANSWER = CHROME_OFFER.replace("a=setup:actpass", "a=setup:active")


def replace_line(sdp: str, prefix: str, new: str | None) -> str:
    """Replace (or with ``None`` drop) every line starting with ``prefix``."""
    out = []
    for line in sdp.split("\r\n"):
        if line.startswith(prefix):
            if new is not None:
                out.append(new)
        else:
            out.append(line)
    return "\r\n".join(out)


def bad_sdp_message(sdp: str, expected: str = "offer") -> str:
    with pytest.raises(ProtocolError) as info:
        validate_sdp(sdp, expected)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.BAD_SDP
    return info.value.message


# ------------------------------------------------------------------ real stacks


@pytest.fixture
async def aiortc_pair() -> AsyncIterator[tuple[RTCSessionDescription, RTCSessionDescription]]:
    """A real offer/answer made by aiortc (host candidates only: no STUN, no network)."""
    config = RTCConfiguration(iceServers=[])
    offerer, answerer = RTCPeerConnection(config), RTCPeerConnection(config)
    try:
        offerer.addTransceiver("audio")
        offerer.addTransceiver("video")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        yield offerer.localDescription, answerer.localDescription
    finally:
        await offerer.close()
        await answerer.close()


async def test_aiortc_offer_and_answer_are_valid(
    aiortc_pair: tuple[RTCSessionDescription, RTCSessionDescription],
) -> None:
    offer, answer = aiortc_pair
    assert (offer.type, answer.type) == ("offer", "answer")
    validate_sdp(offer.sdp, "offer")
    validate_sdp(answer.sdp, "answer")
    # aiortc answers with setup:active: an answer validated as such is fine, but the
    # offer (actpass) is not a valid answer.
    assert "actpass" in bad_sdp_message(offer.sdp, "answer")


async def test_aiortc_offer_through_the_protocol(
    aiortc_pair: tuple[RTCSessionDescription, RTCSessionDescription],
) -> None:
    offer, _ = aiortc_pair
    raw = json.dumps({"v": 1, "type": "video.offer", "contact_id": "c1", "sdp": offer.sdp})
    msg = parse_client_message(raw)
    assert isinstance(msg, VideoOffer) and msg.sdp == offer.sdp


async def test_aiortc_accepts_the_chromium_sample() -> None:
    """Guards the sample itself: if aiortc can't parse it, it's not a realistic SDP."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(CHROME_OFFER, "offer"))
        assert [t.kind for t in pc.getTransceivers()] == ["audio", "video"]
    finally:
        await pc.close()


def test_chromium_offer_and_answer_are_valid() -> None:
    validate_sdp(CHROME_OFFER, "offer")
    validate_sdp(CHROME_ANSWER, "answer")


def test_lf_line_endings_are_accepted() -> None:
    validate_sdp(CHROME_OFFER.replace("\r\n", "\n"), "offer")
    validate_sdp(CHROME_OFFER.rstrip("\r\n"), "offer")  # no final newline


def test_video_only_and_audio_only_are_accepted() -> None:
    audio_only = CHROME_OFFER.split("m=video")[0]
    validate_sdp(audio_only, "offer")


# ------------------------------------------------------------------ rejections


@pytest.mark.parametrize(
    ("sdp", "reason"),
    [
        ("", "v=0"),
        ("hello", "v=0"),
        (CHROME_OFFER.replace("v=0", "v=1", 1), "v=0"),
        ("\r\n" + CHROME_OFFER, "v=0"),
        (replace_line(CHROME_OFFER, "o=", None), "o="),
        (replace_line(CHROME_OFFER, "s=", None), "s="),
        (replace_line(CHROME_OFFER, "a=fingerprint:", None), "fingerprint"),
        (replace_line(CHROME_OFFER, "a=ice-ufrag:", None), "ice-ufrag"),
        (CHROME_OFFER.split("m=audio")[0], "audio or video"),
        (
            CHROME_OFFER.replace(
                "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126", "m=foo 9"
            ).replace("m=video 9", "m=application 9"),
            "m=",
        ),
        (CHROME_OFFER.replace("a=mid:0", "a=mid:\x000"), "line"),
        (CHROME_OFFER.replace("s=-", "s=Grüße"), "line"),
        (CHROME_OFFER.replace("a=mid:0", "a=mid:0\ta"), "line"),
        (CHROME_OFFER.replace("a=mid:0\r\n", "a=mid:0\r\n\r\n"), "line"),
        (CHROME_OFFER.replace("a=mid:0\r\n", "a=mid:0\r"), "CRLF"),
        (CHROME_OFFER.replace("a=mid:0", "A=mid:0"), "line"),
        (CHROME_OFFER.replace("a=mid:0", "mid:0"), "line"),
        (CHROME_OFFER + "a=x:" + "y" * MAX_SDP_BYTES, "bytes"),
        (CHROME_OFFER + "m=audio 9 RTP/AVP 0\r\n" * 20, "media sections"),
    ],
)
def test_structurally_bad_sdp_is_rejected(sdp: str, reason: str) -> None:
    assert reason in bad_sdp_message(sdp)


def test_answer_with_actpass_is_rejected() -> None:
    assert "actpass" in bad_sdp_message(CHROME_OFFER, "answer")


def test_size_limit_counts_bytes() -> None:
    filler = "a=x:" + "é" * ((MAX_SDP_BYTES - len(CHROME_OFFER)) // 2 + 10) + "\r\n"
    sdp = CHROME_OFFER + filler
    assert len(sdp) < MAX_SDP_BYTES < len(sdp.encode())
    assert "bytes" in bad_sdp_message(sdp)


def test_expected_type_must_be_offer_or_answer() -> None:
    with pytest.raises(ValueError, match="expected_type"):
        validate_sdp(CHROME_OFFER, "pranswer")  # type: ignore[arg-type]


def test_error_message_does_not_echo_the_sdp() -> None:
    message = bad_sdp_message(CHROME_OFFER.replace("a=mid:0", "a=mid:0\x01SECRET"))
    assert "SECRET" not in message
