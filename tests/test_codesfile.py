"""The codes file format: round trips, exact bit packing and byte layout, and rejection of every kind of damage."""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import tokenwave
from tokenwave.api import CodesFileError, InvalidCodesError
from tokenwave.codesfile import (
    FORMAT_VERSION,
    MAGIC,
    MAX_HEADER_BYTES,
    CodesHeader,
    code_bits,
    pack_codes,
    read_codes,
    read_header,
    unpack_codes,
    write_codes,
)

DOC = Path(__file__).parent.parent / "docs" / "codes_format.md"
META = dict(sample_rate=24000, frame_rate=25.0, num_samples=12345)


def random_codes(rng: np.random.Generator, k: int, t: int, size: int) -> np.ndarray:
    return rng.integers(0, size, size=(k, t), dtype=np.int64)


def ref_pack(codes: np.ndarray, bits: int) -> bytes:
    """Slow reference: a string of '0'/'1', frame-major, MSB first, zero-padded to whole bytes."""
    k, t = codes.shape
    stream = "".join(format(int(codes[j, i]), f"0{bits}b") for i in range(t) for j in range(k))
    stream += "0" * (-len(stream) % 8)
    return bytes(int(stream[i:i + 8], 2) for i in range(0, len(stream), 8))


def split(raw: bytes) -> tuple[int, dict, bytes]:
    """(version, header dict, payload) of a file's bytes."""
    version, hlen = struct.unpack_from("<HI", raw, 8)
    return version, json.loads(raw[14:14 + hlen]), raw[18 + hlen:]


def build(header: dict | bytes, payload: bytes, *, version: int = FORMAT_VERSION, fix_payload_crc: bool = True,
          magic: bytes = MAGIC) -> bytes:
    """A file with both CRCs valid (unless told otherwise) around any header and payload."""
    if isinstance(header, dict):
        header = dict(header)
        if fix_payload_crc:
            header["payload_crc32"] = zlib.crc32(payload)
        header = json.dumps(header).encode()
    return magic + struct.pack("<HI", version, len(header)) + header + struct.pack("<I", zlib.crc32(header)) + payload


@pytest.fixture
def small(tmp_path) -> tuple[Path, bytes, np.ndarray]:
    """A small real file: 3 codebooks x 5 frames of 1000 values (10 bits, 2 padding bits)."""
    codes = random_codes(np.random.default_rng(0), 3, 5, 1000)
    path = tmp_path / "small.twc"
    write_codes(path, codes, codebook_size=1000, model_id="tiny", config_hash="abc", source="a.wav", **META)
    return path, path.read_bytes(), codes


def assert_rejected(path: Path, data: bytes, match: str | None = None) -> CodesFileError:
    path.write_bytes(data)
    with pytest.raises(CodesFileError, match=match) as info:
        read_codes(path)
    assert str(path) in str(info.value)
    return info.value


# ----------------------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("k, t, size", [
    (8, 250, 1024), (4, 17, 4096), (1, 1, 2), (3, 7, 3), (2, 9, 1), (5, 13, 1000), (1, 70_001, 1025),
    (2, 3, 2 ** 32), (8, 1, 65536),
])
def test_round_trip(tmp_path, k, t, size):
    codes = random_codes(np.random.default_rng(k * t), k, t, size)
    codes[0, 0] = size - 1
    path = tmp_path / "sub" / "dir" / "x.twc"  # parent folders are created
    written = write_codes(path, codes, codebook_size=size, **META)
    back, header = read_codes(path)
    assert back.dtype == np.int64 and back.shape == (k, t) and back.flags.c_contiguous
    np.testing.assert_array_equal(back, codes)
    assert header == written == read_header(path)
    bits = code_bits(size)
    assert (header.num_codebooks, header.num_frames, header.codebook_size, header.bits_per_code) == (k, t, size, bits)
    assert header.num_samples == 12345 and header.sample_rate == 24000 and header.frame_rate == 25.0
    assert header.tokenwave_version == tokenwave.__version__
    assert os.path.getsize(path) == 18 + len(header.to_json().encode()) + (k * t * bits + 7) // 8
    assert sorted(os.listdir(path.parent)) == ["x.twc"]  # no .tmp left behind


def test_code_bits():
    assert [code_bits(n) for n in (1, 2, 3, 4, 5, 1000, 1024, 1025, 4096, 2 ** 32)] == [1, 1, 2, 2, 3, 10, 10, 11,
                                                                                     12, 32]
    with pytest.raises(InvalidCodesError):
        code_bits(0)


def test_metadata_and_torch_input(tmp_path):
    torch = pytest.importorskip("torch")
    codes = torch.randint(0, 1024, (8, 40), generator=torch.Generator().manual_seed(1))
    extra = {"note": "héllo ✓", "nested": {"a": [1, 2.5, None, True]}}
    path = tmp_path / "t.twc"
    header = write_codes(str(path), codes, sample_rate=16000, frame_rate=np.float32(12.5), codebook_size=1024,
                         num_samples=0, model_id="bosonai/x", config_hash="f" * 64, source=Path("dir/ü.wav"),
                         extra=extra)
    back, h = read_codes(path)
    np.testing.assert_array_equal(back, codes.numpy())
    assert h == header
    assert (h.model_id, h.config_hash, h.source, h.extra, h.num_samples) == ("bosonai/x", "f" * 64,
                                                                             os.path.join("dir", "ü.wav"), extra, 0)
    extra["note"] = "changed after writing"
    assert header.extra["note"] == "héllo ✓"  # the header holds its own copy
    assert CodesHeader.from_json(h.to_json()) == h
    hash(h)


def test_exact_bytes(tmp_path):
    path = tmp_path / "e.twc"
    header = write_codes(path, np.array([[1, 1023]]), codebook_size=1024, sample_rate=24000, frame_rate=25,
                         num_samples=1920)
    raw = path.read_bytes()
    hjson = header.to_json().encode()
    assert raw[:14] == b"TWCODES\0" + bytes([1, 0]) + len(hjson).to_bytes(4, "little")
    assert raw[14:14 + len(hjson)] == hjson
    assert raw[14 + len(hjson):18 + len(hjson)] == zlib.crc32(hjson).to_bytes(4, "little")
    assert raw[18 + len(hjson):] == bytes([0x00, 0x7F, 0xF0])  # the example in docs/codes_format.md
    assert len(raw) == 18 + len(hjson) + 3
    assert header.payload_bytes == 3 and header.payload_crc32 == zlib.crc32(bytes([0x00, 0x7F, 0xF0]))
    assert isinstance(header.frame_rate, float)
    assert list(json.loads(hjson)) == ["tokenwave_version", "model_id", "config_hash", "sample_rate", "frame_rate",
                                       "num_codebooks", "codebook_size", "num_frames", "num_samples", "source",
                                       "bits_per_code", "payload_bytes", "payload_crc32", "extra"]


@pytest.mark.parametrize("bits", range(1, 33))
def test_packing_matches_reference(bits):
    rng = np.random.default_rng(bits)
    for k, t in [(1, 1), (3, 5), (8, 13), (2, 31)]:
        codes = rng.integers(0, 2 ** bits, size=(k, t), dtype=np.int64)
        packed = pack_codes(codes, bits)
        assert packed == ref_pack(codes, bits)
        np.testing.assert_array_equal(unpack_codes(packed, k, t, bits), codes)


def test_packing_across_chunks():
    """More codes than one internal step (65 536), with chunk boundaries inside frames."""
    codes = random_codes(np.random.default_rng(5), 7, 20_011, 2 ** 13)
    packed = pack_codes(codes, 13)
    np.testing.assert_array_equal(unpack_codes(packed, 7, 20_011, 13), codes)
    assert packed[:3412] == ref_pack(codes[:, :300], 13)[:3412]  # 300 frames = 27 300 bits


def test_unpack_rejects_bad_data():
    packed = pack_codes(np.array([[5, 6, 7]]), 3)  # 9 bits: 2 bytes, 7 padding bits
    with pytest.raises(CodesFileError, match="expected 2"):
        unpack_codes(packed + b"\0", 1, 3, 3)
    with pytest.raises(CodesFileError, match="padding"):
        unpack_codes(packed[:1] + bytes([packed[1] | 1]), 1, 3, 3)
    with pytest.raises(InvalidCodesError):
        unpack_codes(packed, 1, 3, 33)
    with pytest.raises(InvalidCodesError):
        pack_codes(np.array([[8]]), 3)
    with pytest.raises(InvalidCodesError):
        pack_codes(np.array([1.0]), 3)


def test_read_does_not_use_pickle(tmp_path, monkeypatch):
    path = tmp_path / "p.twc"
    codes = random_codes(np.random.default_rng(2), 4, 9, 4096)
    write_codes(path, codes, codebook_size=4096, **META)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    np.testing.assert_array_equal(read_codes(path)[0], codes)


def test_reference_reader_in_docs(tmp_path):
    """The numpy-only reader printed in docs/codes_format.md reads our files."""
    snippet = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert not re.search(r"^\s*(import|from) tokenwave", snippet, re.M)
    assert len(snippet.strip().splitlines()) <= 22
    namespace: dict = {}
    exec(compile(snippet, str(DOC), "exec"), namespace)  # our own documentation, not file content
    for k, t, size in [(8, 50, 1024), (3, 11, 3), (2, 5, 1)]:
        codes = random_codes(np.random.default_rng(t), k, t, size)
        path = tmp_path / f"{k}_{t}.twc"
        header = write_codes(path, codes, codebook_size=size, **META)
        got, h = namespace["read_tokenwave_codes"](path)
        np.testing.assert_array_equal(got, codes)
        assert CodesHeader.from_json(json.dumps(h)) == header


# ----------------------------------------------------------------------------------------------- write validation

@pytest.mark.parametrize("codes, match", [
    (np.zeros((2, 3), dtype=np.float32), "integer dtype"),
    (np.zeros((2, 3), dtype=bool), "integer dtype"),
    (np.zeros((1, 2, 3), dtype=np.int64), "2-D"),
    (np.zeros(5, dtype=np.int64), "2-D"),
    (np.array([[0, -1, 2]]), r"codes\[0, 1\] = -1"),
    (np.array([[0, 1], [1024, 3]]), r"codes\[1, 0\] = 1024"),
    (np.zeros((0, 4), dtype=np.int64), "no codebooks"),
    (np.zeros((4, 0), dtype=np.int64), "no frames"),
    ([[1, 2]], "torch.Tensor or numpy.ndarray"),
])
def test_write_rejects_bad_codes(tmp_path, codes, match):
    path = tmp_path / "bad.twc"
    with pytest.raises(InvalidCodesError, match=match):
        write_codes(path, codes, codebook_size=1024, **META)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_write_rejects_torch_float(tmp_path):
    torch = pytest.importorskip("torch")
    with pytest.raises(InvalidCodesError, match="integer dtype"):
        write_codes(tmp_path / "f.twc", torch.zeros(2, 3), codebook_size=1024, **META)


@pytest.mark.parametrize("changes, match", [
    (dict(sample_rate=0), "sample_rate"), (dict(sample_rate=24000.0), "sample_rate"),
    (dict(sample_rate=True), "sample_rate"), (dict(frame_rate=0.0), "frame_rate"),
    (dict(frame_rate=float("nan")), "frame_rate"), (dict(frame_rate="25"), "frame_rate"),
    (dict(num_samples=-1), "num_samples"), (dict(codebook_size=0), "codebook_size"),
    (dict(codebook_size=2 ** 32 + 1), "codebook_size"), (dict(model_id=3), "model_id"),
    (dict(config_hash=b"x"), "config_hash"), (dict(extra={1: "x"}), "extra"),
    (dict(extra={"x": float("inf")}), "extra"), (dict(extra=[1]), "extra"), (dict(extra={"t": (1, 2)}), "extra"),
    (dict(source="\udcff"), "UTF-8"), (dict(extra={"x": "y" * MAX_HEADER_BYTES}), "header is"),
])
def test_write_rejects_bad_arguments(tmp_path, changes, match):
    kwargs = dict(META, codebook_size=1024) | changes
    with pytest.raises(InvalidCodesError, match=match):
        write_codes(tmp_path / "bad.twc", np.zeros((2, 3), dtype=np.int64), **kwargs)
    assert not list(tmp_path.iterdir())


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.twc"
    write_codes(path, np.ones((2, 3), dtype=np.int64), codebook_size=4, **META)
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_codes(path, np.zeros((2, 30), dtype=np.int64), codebook_size=4, **META)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["x.twc"]


def test_header_dataclass_validation():
    good = dict(tokenwave_version="0.1.0", model_id=None, config_hash=None, sample_rate=24000, frame_rate=25,
                num_codebooks=8, codebook_size=1024, num_frames=3, num_samples=2000, source=None, bits_per_code=10,
                payload_bytes=30, payload_crc32=0)
    h = CodesHeader(**good)
    assert h.frame_rate == 25.0 and isinstance(h.frame_rate, float) and h.extra == {}
    assert CodesHeader(**(good | dict(num_frames=0, payload_bytes=0))).num_frames == 0
    for bad in [dict(num_frames=-1), dict(num_codebooks=0), dict(bits_per_code=11), dict(payload_bytes=31),
                dict(payload_crc32=2 ** 32), dict(payload_crc32=-1), dict(tokenwave_version=1),
                dict(num_samples=1.5), dict(frame_rate=float("inf")), dict(extra=None)]:
        with pytest.raises(InvalidCodesError):
            CodesHeader(**(good | bad))


# ----------------------------------------------------------------------------------------------- damaged files

def test_wrong_magic(small, tmp_path):
    path, raw, _ = small
    for data in [b"", b"RIFF" + raw[4:], b"twcodes\0" + raw[8:], b"\x80\x04\x95" + raw[3:]]:
        assert_rejected(path, data, "not a tokenwave codes file")
    with pytest.raises(CodesFileError, match="not a tokenwave codes file"):
        read_header(path)


@pytest.mark.parametrize("version", [0, 2, 65535])
def test_unknown_version(small, version):
    path, raw, _ = small
    data = raw[:8] + struct.pack("<H", version) + raw[10:]
    err = assert_rejected(path, data, f"unsupported format version {version} \\(this reader knows 1\\)")
    assert isinstance(err, InvalidCodesError)


def test_every_truncation(small):
    path, raw, codes = small
    messages = set()
    for n in range(len(raw) - 1, -1, -1):
        os.truncate(path, n)  # shrink in place: much faster than rewriting each prefix
        try:
            read_codes(path)
        except CodesFileError as e:
            assert str(path) in str(e)
            messages.add(re.sub(r"[\s(].*", "", str(e).removeprefix(f"{path}: ")))
        else:
            pytest.fail(f"prefix of {n} bytes was accepted")
        with pytest.raises(CodesFileError):
            read_header(path)
    assert messages == {"not", "truncated"}  # "not a tokenwave codes file" only for the empty file
    path.write_bytes(raw)
    np.testing.assert_array_equal(read_codes(path)[0], codes)


@pytest.mark.parametrize("tail", [b"\0", b"x" * 100])
def test_trailing_bytes(small, tail):
    path, raw, _ = small
    assert_rejected(path, raw + tail, f"oversized payload: {len(tail)} trailing bytes")
    with pytest.raises(CodesFileError, match="trailing"):
        read_header(path)


def test_random_byte_flips(small):
    """2000 damaged copies (1 to 4 bytes XORed with nonzero values): every one is rejected with CodesFileError."""
    path, raw, codes = small
    rng = np.random.default_rng(1234)
    accepted = 0
    for _ in range(2000):
        data = bytearray(raw)
        for pos in rng.choice(len(raw), size=rng.integers(1, 5), replace=False):
            data[pos] ^= int(rng.integers(1, 256))
        with open(path, "r+b") as f:  # same length: overwrite in place (truncating each time is slow on ext4)
            f.write(data)
        try:
            back, _ = read_codes(path)
        except CodesFileError:
            continue
        np.testing.assert_array_equal(back, codes)  # only acceptable outcome besides CodesFileError
        accepted += 1
    assert accepted == 0  # header and payload are both covered by a CRC


def test_truncated_payload_message(small):
    path, raw, _ = small
    assert_rejected(path, raw[:-3], r"truncated payload \(expected 19 bytes, found 16\)")


def test_crc_mismatches(small):
    path, raw, _ = small
    version, header, payload = split(raw)
    assert_rejected(path, raw[:-1] + bytes([raw[-1] ^ 0x40]), "payload CRC mismatch")
    hbad = build(header, payload)[:-len(payload) - 4] + b"\0\0\0\0" + payload
    assert_rejected(path, hbad, "header CRC mismatch")


@pytest.mark.parametrize("edit, match", [
    (dict(num_frames=6), "header/payload mismatch"),
    (dict(num_codebooks=2), "header/payload mismatch"),
    (dict(payload_bytes=18), "header/payload mismatch"),
    (dict(codebook_size=1025), "bits_per_code 10 does not match codebook_size 1025"),
    (dict(bits_per_code=11), "bits_per_code 11"),
    (dict(sample_rate="24000"), "sample_rate must be an integer"),
    (dict(sample_rate=24000.0), "sample_rate must be an integer"),
    (dict(num_frames=True), "num_frames must be an integer"),
    (dict(num_samples=-5), "num_samples must be >= 0"),
    (dict(frame_rate=None), "frame_rate"),
    (dict(model_id=7), "model_id must be a str or null"),
    (dict(extra=[1, 2]), "extra must be a dict"),
    (dict(tokenwave_version=None), "tokenwave_version"),
    (dict(num_frames=6, payload_bytes=23), "truncated payload"),
    (dict(num_frames=4, payload_bytes=15), "oversized payload"),
    (dict(num_frames=10 ** 15, payload_bytes=3 * 10 ** 16 // 8), r"truncated payload \(expected 3750000000000000"),
])
def test_inconsistent_header_with_valid_crcs(small, edit, match):
    """The consistency checks, not the CRCs, catch these: both CRCs are recomputed after editing."""
    path, raw, _ = small
    _, header, payload = split(raw)
    assert_rejected(path, build(header | edit, payload), match)
    with pytest.raises(CodesFileError, match=match):
        read_header(path)


@pytest.mark.parametrize("text, match", [
    (b"", "not valid JSON"), (b"{", "not valid JSON"), (b"[1, 2]", "not a JSON object"),
    (b"\xff\xfe{}", "not valid UTF-8"), (b'"x"', "not a JSON object"), (b"{}", "'tokenwave_version' is missing"),
    (b"[" * 200_000 + b"]" * 200_000, "not valid JSON"),
])
def test_bad_header_text(small, text, match):
    path, _, _ = small
    assert_rejected(path, build(text, b""), match)


def test_header_json_strictness(small):
    path, raw, codes = small
    _, header, payload = split(raw)
    text = json.dumps(header)
    dup = text[:-1] + ', "num_frames": 5}'
    assert_rejected(path, build(dup.encode(), payload), "duplicate key 'num_frames'")
    nan = text.replace('"frame_rate": 25.0', '"frame_rate": NaN')
    assert nan != text
    assert_rejected(path, build(nan.encode(), payload), "NaN")
    missing = {k: v for k, v in header.items() if k != "payload_crc32"}
    assert_rejected(path, build(missing, payload, fix_payload_crc=False), "'payload_crc32' is missing")
    # unknown keys are ignored, a missing `extra` means {}
    relaxed = {k: v for k, v in header.items() if k != "extra"} | {"future_field": [1, 2]}
    path.write_bytes(build(relaxed, payload))
    back, h = read_codes(path)
    np.testing.assert_array_equal(back, codes)
    assert h.extra == {}


def test_absurd_header_length(small):
    path, raw, _ = small
    for hlen in (MAX_HEADER_BYTES + 1, 2 ** 32 - 1):
        assert_rejected(path, raw[:10] + struct.pack("<I", hlen) + raw[14:], f"header length {hlen} bytes exceeds")
    assert_rejected(path, raw[:10] + struct.pack("<I", MAX_HEADER_BYTES) + raw[14:], "truncated header")


def test_out_of_range_code_with_valid_crc(small):
    path, raw, _ = small
    _, header, _ = split(raw)
    codes = random_codes(np.random.default_rng(3), 3, 5, 1000)
    codes[2, 4] = 1010  # fits in 10 bits, outside codebook_size 1000
    err = assert_rejected(path, build(header, pack_codes(codes, 10)), "code out of range")
    assert "codes[2, 4] = 1010" in str(err)


def test_nonzero_padding_with_valid_crc(small):
    path, raw, codes = small
    _, header, payload = split(raw)
    assert (3 * 5 * 10) % 8 == 6  # two padding bits
    for bit in (1, 2):
        bad = payload[:-1] + bytes([payload[-1] | bit])
        assert_rejected(path, build(header, bad), "nonzero padding bits")
    path.write_bytes(build(header, payload[:-1] + bytes([payload[-1] | 4])))  # a data bit: valid, different codes
    assert not np.array_equal(read_codes(path)[0], codes)


def test_read_header_skips_payload(small):
    path, raw, _ = small
    _, header, payload = split(raw)
    damaged = payload[:-1] + bytes([payload[-1] ^ 0x80])
    path.write_bytes(build(header, damaged, fix_payload_crc=False))
    assert read_header(path).num_frames == 5  # the payload is not read
    with pytest.raises(CodesFileError, match="payload CRC mismatch"):
        read_codes(path)


def test_missing_file_is_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_codes(tmp_path / "nope.twc")


def test_damage_to_a_real_encoding_is_always_our_error(tmp_path, tiny_model):
    """The shipped speech example encoded by a model (tiny, random): every truncation and 500 random byte
    flips of its codes file raise CodesFileError and nothing else."""
    from tokenwave.audio import load_audio

    example = Path(tokenwave.__file__).parent / "assets" / "example_speech_en.wav"
    audio, info = load_audio(example, tiny_model.sample_rate)
    codes = tiny_model.encode(audio).codes[0]
    path = tmp_path / "example.twc"
    write_codes(path, codes, sample_rate=tiny_model.sample_rate, frame_rate=tiny_model.frame_rate,
                codebook_size=tiny_model.codebook_size, num_samples=info.num_samples, source=example.name,
                config_hash=tiny_model.config_hash)
    raw = path.read_bytes()
    back, header = read_codes(path)
    assert np.array_equal(back, codes.numpy()) and header.num_samples == audio.shape[0]
    damaged = tmp_path / "damaged.twc"
    for n in range(len(raw)):
        damaged.write_bytes(raw[:n])
        with pytest.raises(CodesFileError):
            read_codes(damaged)
    rng = np.random.default_rng(7)
    for _ in range(500):
        data = bytearray(raw)
        for pos in rng.integers(0, len(raw), size=int(rng.integers(1, 4))):
            data[pos] ^= int(rng.integers(1, 256))
        damaged.write_bytes(bytes(data))
        with pytest.raises(CodesFileError):
            read_codes(damaged)
