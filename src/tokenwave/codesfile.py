"""The tokenwave codes file: one file per encoded input, versioned, pickle-free, bit-packed.

Layout (all integers little-endian; full specification in ``docs/codes_format.md``)::

    offset      size  content
    0           8     magic b"TWCODES\\0"
    8           2     uint16 format version (1)
    10          4     uint32 H, byte length of the header
    14          H     header: UTF-8 JSON object (see CodesHeader)
    14 + H      4     uint32 CRC32 (zlib.crc32) of the H header bytes
    18 + H      P     payload: codes, frame-major, bits_per_code bits each, MSB first, last byte zero-padded

Nothing read from a file is executed: the header is parsed with :func:`json.loads` and the payload with
:func:`numpy.unpackbits`. Every problem with a file raises :class:`tokenwave.api.CodesFileError` naming the file.
"""

from __future__ import annotations

import copy
import json
import math
import operator
import os
import struct
import zlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from . import __version__
from .api import CodesFileError, InvalidCodesError

__all__ = [
    "MAGIC", "FORMAT_VERSION", "MAX_HEADER_BYTES", "MAX_CODEBOOK_SIZE", "CodesHeader", "code_bits", "pack_codes",
    "unpack_codes", "write_codes", "read_codes", "read_header",
]

MAGIC = b"TWCODES\0"
"""The first 8 bytes of every codes file."""

FORMAT_VERSION = 1
"""The format version this module writes, and the only one it reads."""

MAX_HEADER_BYTES = 1 << 20
"""Largest header (in bytes) that is written or read; a larger declared length is an error."""

MAX_CODEBOOK_SIZE = 1 << 32
"""Largest codebook size the format stores (32 bits per code)."""

_PREFIX = struct.Struct("<8sHI")  # magic, format version, header length
_CRC = struct.Struct("<I")
_CHUNK = 1 << 16  # codes per (un)packing step; a multiple of 8 so every step covers whole bytes


def code_bits(codebook_size: int) -> int:
    """Bits per code for ``codebook_size``: ``ceil(log2(codebook_size))``, at least 1.

    1 -> 1, 2 -> 1, 3 -> 2, 1024 -> 10, 1025 -> 11, 4096 -> 12. Computed exactly with integers.
    """
    size = operator.index(codebook_size)
    if size < 1:
        raise InvalidCodesError(f"codebook_size must be >= 1, got {size}")
    return max(1, (size - 1).bit_length())


def _payload_bytes(num_codebooks: int, num_frames: int, bits: int) -> int:
    return (num_codebooks * num_frames * bits + 7) // 8


# ----------------------------------------------------------------------------------------------- header

def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_json_value(name: str, value: Any) -> None:
    """Raise InvalidCodesError unless ``value`` survives a JSON round trip unchanged."""
    try:
        text = json.dumps(value, allow_nan=False)
        same = json.loads(text) == value
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidCodesError(f"{name} must be JSON-representable: {e}") from None
    if not same:
        raise InvalidCodesError(f"{name} must be JSON-representable (str keys, no tuples): {value!r}")


@dataclass(frozen=True)
class CodesHeader:
    """The JSON header of a codes file.

    Construction validates every field and raises :class:`tokenwave.api.InvalidCodesError` on the first problem.
    Integer fields must be ``int`` (not ``bool``, not float); ``frame_rate`` may be given as int or float and is
    stored as float.

    Attributes:
        tokenwave_version: version of the tokenwave that wrote the file.
        model_id: tokenizer that produced the codes (hub id or folder name), or None.
        config_hash: hash of the tokenizer configuration (``tokenwave.api.config_hash``), or None.
        sample_rate: sample rate of the audio the codes describe, Hz, > 0.
        frame_rate: code frames per second, finite and > 0.
        num_codebooks: K, >= 1.
        codebook_size: values per codebook, 1 <= codebook_size <= 2**32; codes lie in ``[0, codebook_size)``.
        num_frames: T, >= 0.
        num_samples: length of the original audio in samples at ``sample_rate``, >= 0.
        source: name of the source file, or None.
        bits_per_code: ``code_bits(codebook_size)``.
        payload_bytes: ``ceil(num_codebooks * num_frames * bits_per_code / 8)``.
        payload_crc32: ``zlib.crc32`` of the payload, 0 <= value < 2**32.
        extra: free JSON object (str keys, JSON values); empty by default.
    """

    tokenwave_version: str
    model_id: str | None
    config_hash: str | None
    sample_rate: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int
    num_frames: int
    num_samples: int
    source: str | None
    bits_per_code: int
    payload_bytes: int
    payload_crc32: int
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tokenwave_version, str):
            raise InvalidCodesError(f"tokenwave_version must be a str, got {self.tokenwave_version!r}")
        for name in ("model_id", "config_hash", "source"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidCodesError(f"{name} must be a str or null, got {value!r}")
        for name, low in (("sample_rate", 1), ("num_codebooks", 1), ("codebook_size", 1), ("num_frames", 0),
                          ("num_samples", 0), ("bits_per_code", 1), ("payload_bytes", 0), ("payload_crc32", 0)):
            value = getattr(self, name)
            if not _is_int(value):
                raise InvalidCodesError(f"{name} must be an integer, got {value!r}")
            if value < low:
                raise InvalidCodesError(f"{name} must be >= {low}, got {value}")
        rate = self.frame_rate
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0:
            raise InvalidCodesError(f"frame_rate must be a finite number > 0, got {rate!r}")
        object.__setattr__(self, "frame_rate", float(rate))
        if self.codebook_size > MAX_CODEBOOK_SIZE:
            raise InvalidCodesError(f"codebook_size must be <= 2**32, got {self.codebook_size}")
        if self.payload_crc32 >= 1 << 32:
            raise InvalidCodesError(f"payload_crc32 must be < 2**32, got {self.payload_crc32}")
        need = code_bits(self.codebook_size)
        if self.bits_per_code != need:
            raise InvalidCodesError(
                f"bits_per_code {self.bits_per_code} does not match codebook_size {self.codebook_size} "
                f"(which needs {need})")
        expected = _payload_bytes(self.num_codebooks, self.num_frames, self.bits_per_code)
        if self.payload_bytes != expected:
            raise InvalidCodesError(
                f"header/payload mismatch: payload_bytes is {self.payload_bytes}, but num_codebooks "
                f"{self.num_codebooks} x num_frames {self.num_frames} x bits_per_code {self.bits_per_code} "
                f"needs {expected}")
        if not isinstance(self.extra, dict):
            raise InvalidCodesError(f"extra must be a dict (JSON object), got {type(self.extra).__name__}")
        _check_json_value("extra", self.extra)

    def to_json(self) -> str:
        """The header as compact JSON text, fields in declaration order, non-ASCII kept as is."""
        return json.dumps(asdict(self), ensure_ascii=False, allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str = "codes header") -> CodesHeader:
        """Parse and validate a header.

        ``text`` is JSON text, or its UTF-8 bytes. Every field except ``extra`` is required; unknown keys are
        ignored. Duplicate keys and the non-standard constants NaN/Infinity are rejected.

        Raises:
            CodesFileError: with a message starting ``where + ": "`` naming the problem.
        """
        if isinstance(text, (bytes, bytearray, memoryview)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as e:
                raise CodesFileError(f"{where}: header is not valid UTF-8 ({e})") from None
        try:
            obj = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            raise CodesFileError(f"{where}: header is not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise CodesFileError(f"{where}: header is not a JSON object (got {type(obj).__name__})")
        kwargs = {}
        for f in fields(cls):
            if f.name in obj:
                kwargs[f.name] = obj[f.name]
            elif f.name != "extra":
                raise CodesFileError(f"{where}: header field {f.name!r} is missing")
        try:
            return cls(**kwargs)
        except InvalidCodesError as e:
            raise CodesFileError(f"{where}: invalid header: {e}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard constant {name}")


# ----------------------------------------------------------------------------------------------- packing

def _check_bits(bits: int) -> int:
    if not _is_int(bits) and not isinstance(bits, np.integer):
        raise InvalidCodesError(f"bits must be an integer, got {bits!r}")
    bits = int(bits)
    if not 1 <= bits <= 32:
        raise InvalidCodesError(f"bits must be in [1, 32], got {bits}")
    return bits


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Bit-pack codes ``[K, T]`` at ``bits`` bits each.

    Order: frame-major (``codes[0, 0], codes[1, 0], ..., codes[K-1, 0], codes[0, 1], ...``). Each code is written
    most significant bit first into one continuous bit stream; the stream fills bytes from their most significant
    bit (``numpy.packbits`` with ``bitorder="big"``). The last byte is padded with zero bits. The result has
    ``ceil(K * T * bits / 8)`` bytes.

    Raises:
        InvalidCodesError: ``codes`` is not a 2-D integer array, ``bits`` is not in [1, 32], or a value is
            outside ``[0, 2**bits)``.
    """
    bits = _check_bits(bits)
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise InvalidCodesError(f"codes must be 2-D [K, T], got shape {tuple(codes.shape)}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise InvalidCodesError(f"codes must have an integer dtype, got {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << bits):
        raise InvalidCodesError(f"codes must lie in [0, 2**{bits}), found values in [{codes.min()}, {codes.max()}]")
    flat = np.ascontiguousarray(codes.T).reshape(-1).astype(">u4")  # frame-major, big-endian 32-bit
    out = bytearray()
    for start in range(0, flat.size, _CHUNK):  # bounded memory: 32 bytes of scratch per code in a chunk
        chunk = flat[start:start + _CHUNK]
        allbits = np.unpackbits(chunk.view(np.uint8).reshape(-1, 4), axis=1)  # [n, 32], MSB first
        out += np.packbits(allbits[:, 32 - bits:]).tobytes()
    return bytes(out)


def unpack_codes(data: bytes, num_codebooks: int, num_frames: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: int64 codes ``[num_codebooks, num_frames]`` from ``data``.

    ``data`` must have exactly ``ceil(num_codebooks * num_frames * bits / 8)`` bytes and its padding bits (the
    unused low bits of the last byte) must be zero. Values are not checked against a codebook size.

    Raises:
        InvalidCodesError: bad ``num_codebooks``, ``num_frames`` (negative) or ``bits`` (not in [1, 32]).
        CodesFileError: ``data`` has the wrong length or nonzero padding bits.
    """
    bits = _check_bits(bits)
    k, t = operator.index(num_codebooks), operator.index(num_frames)
    if k < 0 or t < 0:
        raise InvalidCodesError(f"num_codebooks and num_frames must be >= 0, got {k} and {t}")
    n = k * t
    buf = np.frombuffer(data, dtype=np.uint8)
    expected = _payload_bytes(k, t, bits)
    if buf.size != expected:
        raise CodesFileError(f"packed codes have {buf.size} bytes, expected {expected} for {k} x {t} x {bits} bits")
    pad = 8 * expected - n * bits
    if pad and buf[-1] & ((1 << pad) - 1):
        raise CodesFileError(f"nonzero padding bits in the last payload byte ({int(buf[-1]):#04x}, {pad} pad bits)")
    values = np.empty(n, dtype=np.int64)
    step_bytes = _CHUNK * bits // 8
    for i, start in enumerate(range(0, n, _CHUNK)):
        m = min(_CHUNK, n - start)
        part = np.unpackbits(buf[i * step_bytes:(i + 1) * step_bytes], count=m * bits).reshape(m, bits)
        allbits = np.zeros((m, 32), dtype=np.uint8)
        allbits[:, 32 - bits:] = part
        values[start:start + m] = np.packbits(allbits, axis=1).view(">u4").reshape(m)
    return values.reshape(t, k).T.copy()


# ----------------------------------------------------------------------------------------------- files

def _as_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool):
        raise InvalidCodesError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise InvalidCodesError(f"{name} must be an integer, got {value!r}") from None
    if value < low:
        raise InvalidCodesError(f"{name} must be >= {low}, got {value}")
    return value


def _codes_array(codes: Any, codebook_size: int) -> np.ndarray:
    if not isinstance(codes, np.ndarray):
        if type(codes).__module__.split(".")[0] == "torch" and hasattr(codes, "detach"):
            codes = codes.detach().cpu().numpy()
        else:
            raise InvalidCodesError(f"codes must be a torch.Tensor or numpy.ndarray, got {type(codes).__name__}")
    if codes.ndim != 2:
        raise InvalidCodesError(f"codes must be 2-D [num_codebooks, num_frames], got shape {tuple(codes.shape)}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise InvalidCodesError(f"codes must have an integer dtype, got {codes.dtype}")
    k, t = codes.shape
    if k == 0:
        raise InvalidCodesError("codes have no codebooks (shape [0, T])")
    if t == 0:
        raise InvalidCodesError("codes have no frames (shape [K, 0]); an empty encoding is not written")
    bad = (codes < 0) | (codes >= codebook_size)
    if bad.any():
        kk, tt = (int(i) for i in np.argwhere(bad)[0])
        raise InvalidCodesError(
            f"codes must lie in [0, {codebook_size}): codes[{kk}, {tt}] = {codes[kk, tt]} "
            f"({int(bad.sum())} value(s) out of range)")
    return codes


def write_codes(path: str | os.PathLike, codes: Any, *, sample_rate: int, frame_rate: float, codebook_size: int,
                num_samples: int, model_id: str | None = None, config_hash: str | None = None,
                source: str | os.PathLike | None = None, extra: dict[str, Any] | None = None) -> CodesHeader:
    """Write ``codes`` ``[K, T]`` (torch tensor or numpy array of integers) to a codes file at ``path``.

    The file is first written to ``path + ".tmp"`` in the same folder, flushed to disk, then renamed over ``path``
    with :func:`os.replace`, so ``path`` holds either its previous content or the complete new file. Missing
    parent folders are created. ``source`` is stored as given (a path-like is converted with ``os.fspath``).

    Returns:
        The header written.

    Raises:
        InvalidCodesError: codes not 2-D, not of an integer dtype, with K = 0 or T = 0, or with a value outside
            ``[0, codebook_size)``; or an invalid argument (non-integer or non-positive ``sample_rate``,
            ``codebook_size`` outside [1, 2**32], negative ``num_samples``, non-finite or non-positive
            ``frame_rate``, non-str ids, ``extra`` not a JSON object, header over 1 MiB).
    """
    codebook_size = _as_int("codebook_size", codebook_size, 1)
    if codebook_size > MAX_CODEBOOK_SIZE:
        raise InvalidCodesError(f"codebook_size must be <= 2**32, got {codebook_size}")
    sample_rate = _as_int("sample_rate", sample_rate, 1)
    num_samples = _as_int("num_samples", num_samples, 0)
    if isinstance(frame_rate, (np.integer, np.floating)):
        frame_rate = float(frame_rate)
    if source is not None and not isinstance(source, str):
        source = os.fspath(source) if isinstance(source, os.PathLike) else source
    if extra is not None and not isinstance(extra, dict):
        raise InvalidCodesError(f"extra must be a dict (JSON object) or None, got {type(extra).__name__}")
    arr = _codes_array(codes, codebook_size)
    bits = code_bits(codebook_size)
    payload = pack_codes(arr, bits)
    header = CodesHeader(
        tokenwave_version=__version__, model_id=model_id, config_hash=config_hash, sample_rate=sample_rate,
        frame_rate=frame_rate, num_codebooks=int(arr.shape[0]), codebook_size=codebook_size,
        num_frames=int(arr.shape[1]), num_samples=num_samples, source=source, bits_per_code=bits,
        payload_bytes=len(payload), payload_crc32=zlib.crc32(payload),
        extra=copy.deepcopy(extra) if extra is not None else {},
    )
    try:
        hbytes = header.to_json().encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidCodesError(f"header text cannot be encoded as UTF-8 ({e})") from None
    if len(hbytes) > MAX_HEADER_BYTES:
        raise InvalidCodesError(f"header is {len(hbytes)} bytes, more than the limit of {MAX_HEADER_BYTES}")

    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(hbytes)))
            f.write(hbytes)
            f.write(_CRC.pack(zlib.crc32(hbytes)))
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return header


def _open_header(f, name: str) -> tuple[CodesHeader, int, int]:
    """Read and check prefix, header and header CRC. Returns (header, payload offset, file size)."""
    size = os.fstat(f.fileno()).st_size
    prefix = f.read(_PREFIX.size)
    head = prefix[:len(MAGIC)]
    if head != MAGIC[:len(head)] or not head:
        raise CodesFileError(f"{name}: not a tokenwave codes file (starts with {head!r}, expected {MAGIC!r})")
    if len(prefix) < _PREFIX.size:
        raise CodesFileError(
            f"{name}: truncated header: file has {size} bytes, the fixed prefix alone needs {_PREFIX.size}")
    _, version, hlen = _PREFIX.unpack(prefix)
    if version != FORMAT_VERSION:
        raise CodesFileError(f"{name}: unsupported format version {version} (this reader knows {FORMAT_VERSION})")
    if hlen > MAX_HEADER_BYTES:
        raise CodesFileError(f"{name}: header length {hlen} bytes exceeds the limit of {MAX_HEADER_BYTES}")
    payload_offset = _PREFIX.size + hlen + _CRC.size
    if size < payload_offset:
        raise CodesFileError(
            f"{name}: truncated header: expected {hlen} header bytes and a 4-byte CRC, file has {size} bytes "
            f"(needs at least {payload_offset})")
    hbytes = f.read(hlen)
    crc_bytes = f.read(_CRC.size)
    if len(hbytes) != hlen or len(crc_bytes) != _CRC.size:  # the file shrank while we read it
        raise CodesFileError(f"{name}: truncated header")
    (crc,) = _CRC.unpack(crc_bytes)
    if zlib.crc32(hbytes) != crc:
        raise CodesFileError(f"{name}: header CRC mismatch (stored {crc:#010x}, computed {zlib.crc32(hbytes):#010x})")
    header = CodesHeader.from_json(hbytes, where=name)
    found = size - payload_offset
    if found < header.payload_bytes:
        raise CodesFileError(f"{name}: truncated payload (expected {header.payload_bytes} bytes, found {found})")
    if found > header.payload_bytes:
        raise CodesFileError(
            f"{name}: oversized payload: {found - header.payload_bytes} trailing bytes after the "
            f"{header.payload_bytes}-byte payload")
    return header, payload_offset, size


def read_header(path: str | os.PathLike) -> CodesHeader:
    """Read and validate the header of the codes file at ``path``, without reading the payload.

    Checks the magic, the format version, the header CRC, every header field, and that the file size equals
    header plus ``payload_bytes``. Does not check the payload CRC, padding bits or code values (see
    :func:`read_codes`).

    Raises:
        CodesFileError: the file is not a valid codes file; the message names the file and the problem.
        OSError: the file cannot be opened or read.
    """
    name = os.fspath(path)
    with open(name, "rb") as f:
        return _open_header(f, name)[0]


def read_codes(path: str | os.PathLike) -> tuple[np.ndarray, CodesHeader]:
    """Read the codes file at ``path``: int64 codes ``[num_codebooks, num_frames]`` and the header.

    Everything :func:`read_header` checks, plus: the payload CRC, zero padding bits, and every code in
    ``[0, codebook_size)``. Memory is allocated only after the file size has been checked against the header.

    Raises:
        CodesFileError: the file is not a valid codes file; the message names the file and the problem.
        OSError: the file cannot be opened or read.
    """
    name = os.fspath(path)
    with open(name, "rb") as f:
        header, _, _ = _open_header(f, name)
        payload = f.read(header.payload_bytes)
    if len(payload) != header.payload_bytes:  # the file shrank while we read it
        raise CodesFileError(
            f"{name}: truncated payload (expected {header.payload_bytes} bytes, found {len(payload)})")
    crc = zlib.crc32(payload)
    if crc != header.payload_crc32:
        raise CodesFileError(
            f"{name}: payload CRC mismatch (header says {header.payload_crc32:#010x}, payload has {crc:#010x})")
    try:
        codes = unpack_codes(payload, header.num_codebooks, header.num_frames, header.bits_per_code)
    except CodesFileError as e:
        raise CodesFileError(f"{name}: {e}") from None
    if codes.size:
        bad = codes >= header.codebook_size
        if bad.any():
            k, t = (int(i) for i in np.argwhere(bad)[0])
            raise CodesFileError(
                f"{name}: code out of range: codes[{k}, {t}] = {codes[k, t]} is not below codebook_size "
                f"{header.codebook_size}")
    return codes, header
