"""Envelope encryption for files at rest: streaming AES-256-GCM (STREAM) with wrapped data keys.

Why: session recordings (hundreds of MB) and evidence images must be
unreadable on disk and in backups, yet an auditor must be able to seek in a
recording (HTTP Range) without decrypting all of it, and a master-key rotation
must not rewrite terabytes. So each file gets a fresh random data key, wrapped
by a master key; the body is cut into independently authenticated chunks.

File layout (all integers big-endian)::

    fixed header  (36 B)  magic "VBANKENV" | version u8 | file id 16 B
                          | chunk size u32 | nonce prefix 7 B
    key block     (93 B)  master key id length u8 | master key id (UTF-8,
                          zero-padded to 32 B) | wrap nonce 12 B
                          | wrapped data key 48 B (AES-256-GCM of the key)
    chunks                AES-256-GCM(data key, nonce, plaintext chunk, AD)
                          nonce = nonce prefix | chunk counter u32 | last flag u8
                          AD    = fixed header

Every chunk holds ``chunk size`` plaintext bytes except the last, which holds
1..chunk size (0 only for an empty file) and alone has the last flag. The
counter in the nonce stops reordering, the last flag stops truncation at a
chunk boundary, and the fixed header in the AD ties chunks to this file. The
key block is authenticated by the wrapping AEAD, whose AD is every header byte
except the wrapped key itself; a re-wrap changes only the key block, so the
chunks stay valid without being touched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import logging
import math
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Protocol, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "ByteSink",
    "ChunkAuthenticationError",
    "EnvelopeError",
    "EnvelopeFormatError",
    "EnvelopeHeader",
    "EnvelopeInfo",
    "EnvelopeReader",
    "EnvelopeWriter",
    "FileIdMismatchError",
    "KeyUnwrapError",
    "MasterKeyring",
    "TruncatedEnvelopeError",
    "UnknownMasterKeyError",
    "bench_encrypt",
    "decrypt_bytes",
    "encrypt_bytes",
    "fsync_dir",
    "read_header",
    "rewrap_file",
    "rewrap_header",
]

logger = logging.getLogger(__name__)

MAGIC: Final = b"VBANKENV"
FORMAT_VERSION: Final = 1
DEFAULT_CHUNK_SIZE: Final = 64 * 1024
MAX_CHUNK_SIZE: Final = 16 * 1024 * 1024
FILE_ID_SIZE: Final = 16
KEY_SIZE: Final = 32
TAG_SIZE: Final = 16
NONCE_PREFIX_SIZE: Final = 7
MAX_KEY_ID_BYTES: Final = 32
MAX_CHUNKS: Final = 1 << 32

_FIXED = struct.Struct(">8sB16sI7s")
_KEY_BLOCK = struct.Struct(">B32s12s48s")
HEADER_SIZE: Final = _FIXED.size + _KEY_BLOCK.size  # 129
_NONCE_TAIL = struct.Struct(">IB")
_WRAP_DOMAIN = b"vbank/envelope/wrap/v1\x00"
# writes at least this big are encrypted in a worker thread while this one hashes them
_THREADED_MIN: Final = 256 * 1024
_WRITE_PIECE: Final = 1 << 20  # bench_encrypt's writes, as seal_file reads
_workers: ThreadPoolExecutor | None = None
_workers_lock = threading.Lock()


def _in_thread(fn: Callable[[memoryview], None], data: memoryview) -> Future[None]:
    """Run ``fn(data)`` in a shared worker thread."""
    global _workers
    with _workers_lock:
        if _workers is None:
            _workers = ThreadPoolExecutor(os.cpu_count() or 1, "envelope-encrypt")
    return _workers.submit(fn, data)


class EnvelopeError(Exception):
    """Base class: an envelope cannot be written, opened or decrypted."""


class EnvelopeFormatError(EnvelopeError):
    """The header is not ours (magic, version) or holds impossible values."""


class UnknownMasterKeyError(EnvelopeError):
    """The file's data key is wrapped by a master key the keyring does not hold."""


class KeyUnwrapError(EnvelopeError):
    """The data key failed to unwrap: wrong master key bytes or a tampered header."""


class FileIdMismatchError(EnvelopeError):
    """The file is not the one the caller asked for (e.g. a swapped recording)."""


class TruncatedEnvelopeError(EnvelopeError):
    """The ciphertext ends early: missing header bytes, chunks or final marker."""


class ChunkAuthenticationError(EnvelopeError):
    """A chunk failed authentication: flipped bytes, reordered or foreign chunks."""

    def __init__(self, index: int, message: str | None = None) -> None:
        self.index = index
        super().__init__(message or f"chunk {index} failed authentication")


class ByteSink(Protocol):
    """Where a writer puts ciphertext: any binary file object (or a duck-typed sink)."""

    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> object: ...


def _aesgcm(key: bytes) -> AESGCM:
    return AESGCM(key)


class MasterKeyring:
    """Master keys by id, one of them current (used for new files and re-wraps).

    Keep retired keys here until :func:`rewrap_file` has moved every file off
    them; after that, dropping a key makes files still wrapped by it unreadable.
    """

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        self._keys: dict[str, bytes] = {}
        for key_id, key in keys.items():
            _check_key_id(key_id)
            if not isinstance(key, bytes) or len(key) != KEY_SIZE:
                raise ValueError(f"master key {key_id!r} must be {KEY_SIZE} bytes")
            self._keys[key_id] = key
        if current not in self._keys:
            raise ValueError(f"current master key {current!r} is not in the keyring")
        self._current = current

    @classmethod
    def from_config(cls, keys: Mapping[str, str | bytes], current: str) -> MasterKeyring:
        """Build from config values: 32 raw bytes, base64 (std or urlsafe) or 64 hex digits."""
        return cls({key_id: _decode_key(key_id, v) for key_id, v in keys.items()}, current)

    @staticmethod
    def generate_key() -> bytes:
        """A fresh random 256-bit master key."""
        return secrets.token_bytes(KEY_SIZE)

    @property
    def current_id(self) -> str:
        """Id of the key that wraps new data keys."""
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """All key ids held."""
        return tuple(self._keys)

    def get(self, key_id: str) -> bytes:
        """Key bytes for ``key_id``; :class:`UnknownMasterKeyError` if absent."""
        try:
            return self._keys[key_id]
        except KeyError:
            raise UnknownMasterKeyError(f"master key {key_id!r} is not available") from None

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __repr__(self) -> str:
        return f"MasterKeyring(ids={list(self._keys)}, current={self._current!r})"


def _check_key_id(key_id: str) -> None:
    if not isinstance(key_id, str) or not key_id:
        raise ValueError("master key id must be a non-empty string")
    if len(key_id.encode("utf-8")) > MAX_KEY_ID_BYTES or "\x00" in key_id:
        raise ValueError(f"master key id {key_id!r}: at most {MAX_KEY_ID_BYTES} bytes, no NUL")


def _decode_key(key_id: str, value: str | bytes) -> bytes:
    if isinstance(value, bytes) and len(value) == KEY_SIZE:
        return value
    text = (value.decode("ascii", "replace") if isinstance(value, bytes) else value).strip()
    raw = b""
    try:
        if len(text) == 2 * KEY_SIZE:
            raw = bytes.fromhex(text)
        else:
            std = text.replace("-", "+").replace("_", "/")
            raw = base64.b64decode(std.encode("ascii"), validate=True)
    except (binascii.Error, ValueError):
        pass
    if len(raw) != KEY_SIZE:
        raise ValueError(f"master key {key_id!r} is not 32 bytes of raw, hex or base64")
    return raw


@dataclass(frozen=True)
class EnvelopeHeader:
    """Parsed file header. ``fixed_bytes()`` is the chunk AD and never changes."""

    file_id: bytes
    chunk_size: int
    nonce_prefix: bytes
    master_key_id: str
    wrap_nonce: bytes
    wrapped_key: bytes = field(repr=False)
    version: int = FORMAT_VERSION

    def fixed_bytes(self) -> bytes:
        """Magic, version, file id, chunk size, nonce prefix: the chunks' AD."""
        return _FIXED.pack(MAGIC, self.version, self.file_id, self.chunk_size, self.nonce_prefix)

    def _key_id_field(self) -> tuple[int, bytes]:
        raw = self.master_key_id.encode("utf-8")
        return len(raw), raw.ljust(MAX_KEY_ID_BYTES, b"\x00")

    def wrap_ad(self) -> bytes:
        """AD for the data-key wrap: every header byte except the wrapped key."""
        n, padded = self._key_id_field()
        return _WRAP_DOMAIN + self.fixed_bytes() + bytes([n]) + padded + self.wrap_nonce

    def to_bytes(self) -> bytes:
        """The 129-byte on-disk header."""
        n, padded = self._key_id_field()
        return self.fixed_bytes() + _KEY_BLOCK.pack(n, padded, self.wrap_nonce, self.wrapped_key)

    @classmethod
    def from_bytes(cls, data: bytes) -> EnvelopeHeader:
        """Parse and sanity-check a header (authenticity is checked on unwrap)."""
        if len(data) < HEADER_SIZE:
            if data[: len(MAGIC)] != MAGIC[: len(data)]:
                raise EnvelopeFormatError("not a vbank envelope (bad magic)")
            raise TruncatedEnvelopeError(f"header is {len(data)} bytes, need {HEADER_SIZE}")
        magic, version, file_id, chunk_size, prefix = _FIXED.unpack_from(data, 0)
        if magic != MAGIC:
            raise EnvelopeFormatError("not a vbank envelope (bad magic)")
        if version != FORMAT_VERSION:
            raise EnvelopeFormatError(f"unsupported envelope version {version}")
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise EnvelopeFormatError(f"bad chunk size {chunk_size}")
        n, padded, wrap_nonce, wrapped = _KEY_BLOCK.unpack_from(data, _FIXED.size)
        if not 1 <= n <= MAX_KEY_ID_BYTES or any(padded[n:]):
            raise EnvelopeFormatError("bad master key id field")
        try:
            key_id = padded[:n].decode("utf-8")
        except UnicodeDecodeError:
            raise EnvelopeFormatError("master key id is not UTF-8") from None
        return cls(file_id, chunk_size, prefix, key_id, wrap_nonce, wrapped, version)


@dataclass(frozen=True)
class EnvelopeInfo:
    """What a finished write produced; ``sha256``/``size`` describe the plaintext."""

    file_id: bytes
    size: int
    sha256: bytes
    ciphertext_size: int
    master_key_id: str

    @property
    def sha256_hex(self) -> str:
        """Plaintext SHA-256 as lowercase hex."""
        return self.sha256.hex()


def _wrap(header_without_key: EnvelopeHeader, data_key: bytes, keyring: MasterKeyring) -> bytes:
    master = keyring.get(header_without_key.master_key_id)
    return _aesgcm(master).encrypt(
        header_without_key.wrap_nonce, data_key, header_without_key.wrap_ad()
    )


def _unwrap(header: EnvelopeHeader, keyring: MasterKeyring) -> bytes:
    master = keyring.get(header.master_key_id)
    try:
        return _aesgcm(master).decrypt(header.wrap_nonce, header.wrapped_key, header.wrap_ad())
    except InvalidTag:
        raise KeyUnwrapError(
            f"cannot unwrap data key with master key {header.master_key_id!r}: "
            "wrong key or tampered header"
        ) from None


def _new_header(
    keyring: MasterKeyring, data_key: bytes, file_id: bytes | None, chunk_size: int
) -> EnvelopeHeader:
    if file_id is None:
        file_id = secrets.token_bytes(FILE_ID_SIZE)
    if not isinstance(file_id, bytes) or len(file_id) != FILE_ID_SIZE:
        raise ValueError(f"file id must be {FILE_ID_SIZE} bytes")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size must be in [1, {MAX_CHUNK_SIZE}]")
    draft = EnvelopeHeader(
        file_id=file_id,
        chunk_size=chunk_size,
        nonce_prefix=secrets.token_bytes(NONCE_PREFIX_SIZE),
        master_key_id=keyring.current_id,
        wrap_nonce=secrets.token_bytes(12),
        wrapped_key=b"",
    )
    return _replace_key(draft, _wrap(draft, data_key, keyring))


def _replace_key(header: EnvelopeHeader, wrapped: bytes) -> EnvelopeHeader:
    return EnvelopeHeader(
        header.file_id,
        header.chunk_size,
        header.nonce_prefix,
        header.master_key_id,
        header.wrap_nonce,
        wrapped,
        header.version,
    )


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + _NONCE_TAIL.pack(index, 1 if last else 0)


class EnvelopeWriter:
    """Streaming encryptor: ``write()`` plaintext as it comes, ``close()`` to finish.

    Given a path, it writes to a hidden temporary file beside it and renames it
    into place on ``close()``, so readers never see a half-written file. Used
    as a context manager, an exception aborts (and for a path, deletes) the
    output instead of finalising it: an unfinished stream has no last-flagged
    chunk, so it can never pass as a complete, shorter file.
    """

    def __init__(
        self,
        dest: ByteSink | str | os.PathLike[str],
        keyring: MasterKeyring,
        *,
        file_id: bytes | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        data_key = secrets.token_bytes(KEY_SIZE)
        self.header = _new_header(keyring, data_key, file_id, chunk_size)
        self._aead = _aesgcm(data_key)
        self._ad = self.header.fixed_bytes()
        self._prefix = self.header.nonce_prefix
        self._cs = chunk_size
        self._buf = bytearray()
        self._hash = hashlib.sha256()
        self._size = 0
        self._counter = 0
        self._written = 0
        self._info: EnvelopeInfo | None = None
        self._aborted = False
        self._path: Path | None = None
        self._tmp: Path | None = None
        self._own: BinaryIO | None = None
        self._fh: ByteSink
        if isinstance(dest, str | os.PathLike):
            self._path = Path(dest)
            self._tmp = self._path.with_name(f".{self._path.name}.{secrets.token_hex(6)}.part")
            self._own = self._fh = open(self._tmp, "xb")  # closed in close() / abort()
        else:
            self._fh = dest
        try:
            self._out(self.header.to_bytes())
        except BaseException:
            self.abort()
            raise

    @property
    def file_id(self) -> bytes:
        """This file's id (store it to check on read)."""
        return self.header.file_id

    def _out(self, data: bytes) -> None:
        self._fh.write(data)
        self._written += len(data)

    def _emit(self, chunk: bytes | bytearray | memoryview, last: bool) -> None:
        if self._counter >= MAX_CHUNKS:
            raise EnvelopeError("file too large for the chunk counter")
        nonce = _nonce(self._prefix, self._counter, last)
        self._counter += 1  # first: a failed write must never lead to nonce reuse
        self._out(self._aead.encrypt(nonce, chunk, self._ad))

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt and write ``data``; returns its length. Keeps <= one chunk buffered.

        If the sink fails, the writer aborts: the stream is then unusable.
        """
        if self._info is not None or self._aborted:
            raise EnvelopeError("write to a closed envelope writer")
        try:
            return self._write(data)
        except BaseException:
            self.abort()
            raise

    def _write(self, data: bytes | bytearray | memoryview) -> int:
        mv = memoryview(data).cast("B")
        n = mv.nbytes
        if n == 0:
            return 0
        if n < _THREADED_MIN:
            self._hash.update(mv)
            self._encrypt(mv)
        else:
            # AES-GCM (``cryptography``) holds the GIL and hashlib releases it for big
            # buffers, so the encryption goes to the worker: it gets the GIL as soon as
            # this thread starts hashing. The other way round, a hashing worker waited
            # for the GIL's switch interval (5 ms, longer than a 1 MiB write takes to
            # encrypt), and hash and cipher ran one after the other (measured).
            encrypting = _in_thread(self._encrypt, mv)
            try:
                self._hash.update(mv)
            finally:
                encrypting.result()  # before returning: the caller may reuse its buffer
        self._size += n
        return n

    def _encrypt(self, mv: memoryview) -> None:
        cs = self._cs
        buf = self._buf
        if buf:
            need = cs - len(buf)
            if mv.nbytes <= need:  # may still be the last chunk: wait for more data or close()
                buf += mv
                return
            buf += mv[:need]
            mv = mv[need:]
            self._emit(buf, last=False)
            buf.clear()
        full = (mv.nbytes - 1) // cs  # whole chunks known not to be last
        for i in range(full):
            self._emit(mv[i * cs : (i + 1) * cs], last=False)
        buf += mv[full * cs :]

    def close(self) -> EnvelopeInfo:
        """Write the final chunk, flush, and (for a path) fsync and rename into place."""
        if self._info is not None:
            return self._info
        if self._aborted:
            raise EnvelopeError("envelope writer was aborted")
        try:
            self._emit(self._buf, last=True)
            self._buf.clear()
            self._fh.flush()
            if self._own is not None and self._tmp is not None and self._path is not None:
                os.fsync(self._own.fileno())
                self._own.close()
                os.replace(self._tmp, self._path)
                self._tmp = None
                fsync_dir(self._path.parent)
        except BaseException:
            self.abort()
            raise
        self._info = EnvelopeInfo(
            file_id=self.header.file_id,
            size=self._size,
            sha256=self._hash.digest(),
            ciphertext_size=self._written,
            master_key_id=self.header.master_key_id,
        )
        logger.debug(
            "encrypted %d bytes into %d chunks (file id %s)",
            self._size,
            self._counter,
            self.header.file_id.hex(),
        )
        return self._info

    def abort(self) -> None:
        """Give up: no final chunk is written; a temporary file we created is removed."""
        if self._info is not None or self._aborted:
            return
        self._aborted = True
        self._buf.clear()
        if self._own is not None and self._tmp is not None:
            try:
                self._own.close()
            finally:
                self._tmp.unlink(missing_ok=True)
                self._tmp = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def fsync_dir(directory: Path) -> None:
    """Persist a rename (best effort: not every platform can open directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class EnvelopeReader:
    """Decrypts an envelope sequentially or by plaintext byte range.

    Opening unwraps the data key and authenticates the final chunk, so the
    plaintext ``size`` is trustworthy before any range is served and a file cut
    at a chunk boundary is refused up front. Thread-safe: reads are positioned
    under a lock, so one reader may serve concurrent range requests.
    """

    def __init__(
        self,
        source: BinaryIO | str | os.PathLike[str],
        keyring: MasterKeyring,
        *,
        expected_file_id: bytes | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._owns = isinstance(source, str | os.PathLike)
        if isinstance(source, str | os.PathLike):
            self._fh: BinaryIO = open(source, "rb")  # closed in close()
        else:
            self._fh = source
        try:
            self._open(keyring, expected_file_id)
        except BaseException:
            self.close()
            raise

    def _open(self, keyring: MasterKeyring, expected_file_id: bytes | None) -> None:
        self._last_plain: bytes | None = None
        self._fh.seek(0, os.SEEK_END)
        total = self._fh.tell()
        self.header = read_header(self._fh)
        if expected_file_id is not None and not hmac.compare_digest(
            self.header.file_id, expected_file_id
        ):
            raise FileIdMismatchError(
                f"file id {self.header.file_id.hex()} is not the expected {expected_file_id.hex()}"
            )
        self._aead = _aesgcm(_unwrap(self.header, keyring))
        self._ad = self.header.fixed_bytes()
        cs = self.header.chunk_size
        body = total - HEADER_SIZE
        if body < TAG_SIZE:
            raise TruncatedEnvelopeError("envelope has no chunks")
        stride = cs + TAG_SIZE
        self.chunk_count = (body + stride - 1) // stride
        self._last_len = body - (self.chunk_count - 1) * stride
        if self._last_len < TAG_SIZE:
            raise TruncatedEnvelopeError("envelope ends inside a chunk tag")
        if self.chunk_count > MAX_CHUNKS:
            raise EnvelopeFormatError("too many chunks")
        self.size = body - TAG_SIZE * self.chunk_count
        self._last_plain = self._decrypt_chunk(self.chunk_count - 1)

    @property
    def file_id(self) -> bytes:
        """The (authenticated) file id."""
        return self.header.file_id

    def _read_at(self, offset: int, length: int) -> bytes:
        with self._lock:
            self._fh.seek(offset)
            return self._fh.read(length)

    def _decrypt_chunk(self, index: int) -> bytes:
        cs = self.header.chunk_size
        last = index == self.chunk_count - 1
        if last and self._last_plain is not None:
            return self._last_plain
        length = self._last_len if last else cs + TAG_SIZE
        data = self._read_at(HEADER_SIZE + index * (cs + TAG_SIZE), length)
        if len(data) != length:
            raise TruncatedEnvelopeError(f"chunk {index} is cut short (file changed?)")
        try:
            return self._aead.decrypt(_nonce(self.header.nonce_prefix, index, last), data, self._ad)
        except InvalidTag:
            pass
        if last:
            try:
                self._aead.decrypt(_nonce(self.header.nonce_prefix, index, False), data, self._ad)
            except InvalidTag:
                pass
            else:
                raise TruncatedEnvelopeError(
                    f"envelope ends after chunk {index} without its final chunk"
                ) from None
        raise ChunkAuthenticationError(index)

    def iter_chunks(self) -> Iterator[bytes]:
        """Decrypt the whole file in order, one authenticated chunk at a time."""
        for i in range(self.chunk_count):
            plain = self._decrypt_chunk(i)
            if plain:
                yield plain

    def iter_range(self, start: int, end: int | None = None) -> Iterator[bytes]:
        """Plaintext ``[start, end)`` (slice semantics, end clamped), decrypting only its chunks.

        Each yielded piece comes from a fully authenticated chunk; a failing
        chunk raises before any of its bytes are yielded.
        """
        if end is None:
            end = self.size
        if start < 0 or end < 0:
            raise ValueError("range bounds must be >= 0")
        end = min(end, self.size)
        if start >= end:
            return
        cs = self.header.chunk_size
        for i in range(start // cs, (end - 1) // cs + 1):
            plain = self._decrypt_chunk(i)
            base = i * cs
            yield plain[max(start - base, 0) : min(end - base, len(plain))]

    def read_range(self, start: int, end: int | None = None) -> bytes:
        """Like ``plaintext[start:end]``; nothing is returned if any needed chunk fails."""
        return b"".join(self.iter_range(start, end))

    def read_all(self) -> bytes:
        """The whole plaintext (small files only)."""
        return b"".join(self.iter_chunks())

    def close(self) -> None:
        """Close the file if this reader opened it."""
        if self._owns:
            self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_header(source: BinaryIO) -> EnvelopeHeader:
    """Read and parse the header at the start of ``source`` (seeks to 0)."""
    source.seek(0)
    return EnvelopeHeader.from_bytes(source.read(HEADER_SIZE))


def rewrap_header(
    header: bytes | EnvelopeHeader, keyring: MasterKeyring, *, new_key_id: str | None = None
) -> bytes:
    """Re-wrap the data key under ``new_key_id`` (default: current); same-size header out.

    The old master key must still be in ``keyring``. Chunks are untouched: they
    depend only on the fixed header part, which is carried over unchanged.
    """
    old = header if isinstance(header, EnvelopeHeader) else EnvelopeHeader.from_bytes(header)
    data_key = _unwrap(old, keyring)
    target = keyring.current_id if new_key_id is None else new_key_id
    keyring.get(target)
    draft = EnvelopeHeader(
        old.file_id,
        old.chunk_size,
        old.nonce_prefix,
        target,
        secrets.token_bytes(12),
        b"",
        old.version,
    )
    return _replace_key(draft, _wrap(draft, data_key, keyring)).to_bytes()


def rewrap_file(path: str | os.PathLike[str], keyring: MasterKeyring) -> EnvelopeHeader:
    """Re-wrap a file's data key in place with the current master key; returns the new header.

    Overwrites only the 129-byte header (one sector), then fsyncs. Files already
    on the current key are left alone.
    """
    with open(path, "r+b") as fh:
        old = read_header(fh)
        if old.master_key_id == keyring.current_id:
            return old
        new_bytes = rewrap_header(old, keyring)
        fh.seek(0)
        fh.write(new_bytes)
        fh.flush()
        os.fsync(fh.fileno())
    logger.info(
        "re-wrapped %s from master key %r to %r", path, old.master_key_id, keyring.current_id
    )
    return EnvelopeHeader.from_bytes(new_bytes)


class _Sink:
    """A write-only byte sink (for in-memory encryption and benchmarks)."""

    def __init__(self, keep: bool) -> None:
        self.parts: list[bytes] = []
        self.keep = keep

    def write(self, data: bytes) -> int:
        if self.keep:
            self.parts.append(data)
        return len(data)

    def flush(self) -> None:
        return None


def encrypt_bytes(
    plaintext: bytes,
    keyring: MasterKeyring,
    *,
    file_id: bytes | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> bytes:
    """Encrypt a small blob (e.g. an evidence image) into a complete envelope."""
    sink = _Sink(keep=True)
    writer = EnvelopeWriter(sink, keyring, file_id=file_id, chunk_size=chunk_size)
    writer.write(plaintext)
    writer.close()
    return b"".join(sink.parts)


def decrypt_bytes(
    blob: bytes, keyring: MasterKeyring, *, expected_file_id: bytes | None = None
) -> bytes:
    """Decrypt a whole envelope held in memory."""
    with EnvelopeReader(io.BytesIO(blob), keyring, expected_file_id=expected_file_id) as reader:
        return reader.read_all()


def bench_encrypt(size_mb: float = 64.0) -> dict[str, float]:
    """Throughput of our writer vs raw ``AESGCM.encrypt`` over the same bytes, best of 5
    interleaved rounds.

    Raw AES-GCM encrypts the 64 KiB chunks the format has; the writer is fed 1 MiB
    writes as :func:`audit.sealed.seal_file` does (``encrypt_64k_writes_mb_per_s``:
    fed 64 KiB writes, below the threaded size, so it hashes and encrypts in one thread).
    Output is discarded, so disk speed is excluded. The writer also SHA-256-hashes the
    plaintext (its ``EnvelopeInfo.sha256``); SHA-256 alone (``sha256_mb_per_s``) is
    slower than AES-GCM on AES-NI CPUs and bounds any hashing writer even with the
    cipher in a second thread. ``ratio`` = encrypt / aesgcm.
    """
    n = max(1, int(size_mb * 1024 * 1024))
    data = secrets.token_bytes(n)
    mv = memoryview(data)
    cs = DEFAULT_CHUNK_SIZE
    keyring = MasterKeyring({"bench": MasterKeyring.generate_key()}, "bench")
    aead = _aesgcm(secrets.token_bytes(KEY_SIZE))
    prefix = secrets.token_bytes(NONCE_PREFIX_SIZE)
    ad = b"\x00" * _FIXED.size

    def run_writer(piece: int) -> None:
        writer = EnvelopeWriter(_Sink(keep=False), keyring)
        for i in range(0, n, piece):
            writer.write(mv[i : i + piece])
        writer.close()

    def run_raw() -> None:
        for count, i in enumerate(range(0, n, cs)):
            aead.encrypt(_nonce(prefix, count, i + cs >= n), mv[i : i + cs], ad)

    def run_raw_hashed() -> None:
        digest = hashlib.sha256()
        for count, i in enumerate(range(0, n, cs)):
            piece = mv[i : i + cs]
            digest.update(piece)
            aead.encrypt(_nonce(prefix, count, i + cs >= n), piece, ad)
        digest.digest()

    def run_sha() -> None:
        hashlib.sha256(data).digest()

    runs: dict[str, Callable[[], None]] = {
        "enc": lambda: run_writer(_WRITE_PIECE),
        "enc_64k": lambda: run_writer(cs),
        "raw": run_raw,
        "raw_hashed": run_raw_hashed,
        "sha": run_sha,
    }
    fastest = dict.fromkeys(runs, math.inf)
    for _ in range(5):  # interleaved, so a slow spell of the machine hits every kind alike
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            fastest[name] = min(fastest[name], time.perf_counter() - t0)
    enc, enc_64k, raw, raw_hashed, sha = (n / (1024 * 1024) / fastest[k] for k in runs)
    return {
        "size_mb": n / (1024 * 1024),
        "encrypt_mb_per_s": enc,
        "encrypt_64k_writes_mb_per_s": enc_64k,
        "aesgcm_mb_per_s": raw,
        "aesgcm_sha256_mb_per_s": raw_hashed,
        "sha256_mb_per_s": sha,
        "ratio": enc / raw,
        "ratio_vs_aesgcm_sha256": enc / raw_hashed,
    }
