"""Signed checkpoints: C2SP tlog-checkpoint bodies inside C2SP signed notes.

Why: a checkpoint commits the log operator to (size, root) under an Ed25519
signature, so any later rewrite of history is provable. Using the standard
text formats lets auditors check our checkpoints with independent tools
(e.g. Go's ``sumdb/note``) and only our public keys.

Checkpoints carry no time of their own (the C2SP format has none), so callers
pass the checkpoint's time ``at``: signing uses every key valid then, and
verification only counts signatures by keys valid then. The log stores that
time next to each checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from audit.keys import KeyRegistry, KeyRegistryError, SigningKey, VerifierKey, validate_key_name

__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "Checkpoint",
    "CheckpointError",
    "CheckpointVerificationError",
    "NoteSignature",
    "SignedNote",
    "VerifiedCheckpoint",
    "open_note",
    "sign_checkpoint",
    "sign_note",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

MAX_NOTE_BYTES = 1 << 20
MAX_SIGNATURES = 100
_SIG_PREFIX = "\u2014 "  # em dash, space
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_BAD_CHARS_RE = re.compile("[\x00-\x09\x0b-\x1f\ud800-\udfff]")
_MAX_TREE_SIZE = (1 << 64) - 1
_ED25519_SIG_LEN = 64


class CheckpointError(Exception):
    """A note or checkpoint is malformed, or cannot be signed as asked."""


class CheckpointVerificationError(CheckpointError):
    """A well-formed note failed signature verification."""


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise CheckpointError(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise CheckpointError(f"{what} is not canonical base64")
    return raw


def _check_text(text: str, what: str) -> None:
    """Signed notes are UTF-8 without ASCII control characters other than newline."""
    if _BAD_CHARS_RE.search(text):
        raise CheckpointError(f"{what} contains a control or non-UTF-8 character")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: ``origin``, ``size`` and RFC 6962 ``root_hash``, plus opaque extensions."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise CheckpointError("checkpoint origin must be non-empty")
        for line in (self.origin, *self.extensions):
            if not isinstance(line, str) or not line or "\n" in line:
                raise CheckpointError("checkpoint lines must be non-empty single lines")
            _check_text(line, "checkpoint line")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise CheckpointError("checkpoint size must be an int")
        if not 0 <= self.size <= _MAX_TREE_SIZE:
            raise CheckpointError("checkpoint size out of range")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != 32:
            raise CheckpointError("checkpoint root hash must be 32 bytes")

    def body(self) -> str:
        """The note text: origin, size, base64 root, extensions, each newline-terminated."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "".join(line + "\n" for line in (*lines, *self.extensions))

    @classmethod
    def from_body(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text (no signatures)."""
        if not isinstance(text, str) or not text.endswith("\n"):
            raise CheckpointError("checkpoint text must end with a newline")
        _check_text(text, "checkpoint text")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint needs origin, size and root hash lines")
        if any(not line for line in lines):
            raise CheckpointError("checkpoint lines must be non-empty")
        origin, size_text, root_text, *extensions = lines
        if not _SIZE_RE.fullmatch(size_text):
            raise CheckpointError(f"bad checkpoint tree size {size_text[:40]!r}")
        root = _b64decode(root_text, "checkpoint root hash")
        return cls(origin, int(size_text), root, tuple(extensions))


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 32-bit key ID and raw signature bytes."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """The encoded line, without its trailing newline."""
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {base64.b64encode(blob).decode()}"


@dataclass(frozen=True)
class SignedNote:
    """A parsed (not yet verified) signed note."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def serialize(self) -> str:
        """Text, blank line, one line per signature."""
        return self.text + "\n" + "".join(s.line() + "\n" for s in self.signatures)

    @classmethod
    def parse(cls, note: str | bytes) -> SignedNote:
        """Split and syntax-check a signed note; raise :class:`CheckpointError` if malformed."""
        if isinstance(note, bytes | bytearray):
            if len(note) > MAX_NOTE_BYTES:
                raise CheckpointError("note is too large")
            try:
                note = bytes(note).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CheckpointError("note is not valid UTF-8") from exc
        if not isinstance(note, str):
            raise CheckpointError("note must be str or bytes")
        if len(note) > MAX_NOTE_BYTES:
            raise CheckpointError("note is too large")
        _check_text(note, "note")
        split = note.rfind("\n\n")
        if split < 0:
            raise CheckpointError("note has no blank line before its signatures")
        text, sig_block = note[: split + 1], note[split + 2 :]
        if not sig_block.endswith("\n"):
            raise CheckpointError("note has no signature lines, or lacks a final newline")
        lines = sig_block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise CheckpointError(f"note has more than {MAX_SIGNATURES} signatures")
        return cls(text, tuple(_parse_sig_line(line) for line in lines))


def _parse_sig_line(line: str) -> NoteSignature:
    if not line.startswith(_SIG_PREFIX):
        raise CheckpointError("signature line must start with an em dash and a space")
    name, _, blob = line[len(_SIG_PREFIX) :].partition(" ")
    try:
        validate_key_name(name)
    except KeyRegistryError as exc:
        raise CheckpointError(f"bad key name in signature line: {exc}") from exc
    if not blob:
        raise CheckpointError("signature line has no signature")
    raw = _b64decode(blob, "signature")
    if len(raw) < 5:
        raise CheckpointError("signature is too short")
    return NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:])


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose note verified, and the known keys that vouched for it."""

    checkpoint: Checkpoint
    signers: tuple[VerifierKey, ...]
    note: SignedNote


def sign_note(text: str, keys: Iterable[SigningKey]) -> str:
    """Sign note ``text`` (newline-terminated) with each key; returns the whole note."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise CheckpointError("note text must be non-empty and end with a newline")
    _check_text(text, "note text")
    message = text.encode("utf-8")
    sigs: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    for key in keys:
        ident = (key.name, key.key_id)
        if ident in seen:
            continue
        seen.add(ident)
        sigs.append(NoteSignature(key.name, key.key_id, key.sign(message)))
    if not sigs:
        raise CheckpointError("no key to sign the note with")
    return SignedNote(text, tuple(sigs)).serialize()


def sign_checkpoint(checkpoint: Checkpoint, registry: KeyRegistry, *, at: datetime) -> str:
    """Sign with every private key valid at ``at`` (old and new during a rotation)."""
    try:
        keys = registry.signers_at(at)
    except KeyRegistryError as exc:
        raise CheckpointError(str(exc)) from exc
    if not keys:
        raise CheckpointError(f"no checkpoint signing key is valid at {at.isoformat()}")
    note = sign_note(checkpoint.body(), keys)
    logger.debug(
        "signed checkpoint %s size %d with %d key(s)", checkpoint.origin, checkpoint.size, len(keys)
    )
    return note


def open_note(
    note: str | bytes, registry: KeyRegistry, *, at: datetime
) -> tuple[SignedNote, tuple[VerifierKey, ...]]:
    """Verify a signed note per C2SP signed-note.

    Signatures by unknown (name, key ID) pairs are ignored. Every signature by
    a known key must verify, else the whole note is rejected. At least one must
    come from a key whose window contains ``at``; valid signatures by keys
    outside their window are not counted.
    """
    parsed = SignedNote.parse(note)
    message = parsed.text.encode("utf-8")
    counted: list[VerifierKey] = []
    for sig in parsed.signatures:
        key = registry.lookup(sig.name, sig.key_id)
        if key is None:
            continue
        if len(sig.signature) != _ED25519_SIG_LEN or not key.verify(message, sig.signature):
            raise CheckpointVerificationError(
                f"invalid signature by known key {sig.name}+{sig.key_id:08x}"
            )
        try:
            in_window = key.valid_at(at)
        except KeyRegistryError as exc:
            raise CheckpointError(str(exc)) from exc
        if in_window:
            if key not in counted:
                counted.append(key)
        else:
            logger.info(
                "ignoring signature by %s+%08x: key not valid at %s",
                sig.name,
                sig.key_id,
                at.isoformat(),
            )
    if not counted:
        raise CheckpointVerificationError(f"no signature by a known key valid at {at.isoformat()}")
    return parsed, tuple(counted)


def verify_checkpoint(
    note: str | bytes,
    registry: KeyRegistry,
    *,
    at: datetime,
    origin: str | None = None,
) -> VerifiedCheckpoint:
    """Verify a signed checkpoint made at ``at``; optionally require its ``origin``.

    Raises :class:`CheckpointError` (parse problems) or its subclass
    :class:`CheckpointVerificationError` (signature problems).
    """
    parsed, signers = open_note(note, registry, at=at)
    checkpoint = Checkpoint.from_body(parsed.text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointVerificationError(
            f"checkpoint origin {checkpoint.origin!r} is not {origin!r}"
        )
    return VerifiedCheckpoint(checkpoint, signers, parsed)
