"""Training data: crops, rates, loudness, determinism, streaming shards and resume, bad files, manifests;
and the exclusion logic of scripts/build-trainset (no network)."""

from __future__ import annotations

import csv
import importlib.machinery
import importlib.util
import math
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tokenwave.training.data import (
    AudioCropDataset,
    CropConfig,
    SkippedAudioWarning,
    StreamingAudioDataset,
    collate,
    normalize,
    read_source,
    sources_from,
)

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parent.parent


def tone(path: Path, rate: int, seconds: float, freq: float = 440.0, channels: int = 1, amp: float = 0.5,
         subtype: str = "PCM_16") -> Path:
    t = np.arange(int(rate * seconds)) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    data = np.stack([x * (1 - 0.5 * c) for c in range(channels)], axis=1) if channels > 1 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data.astype(np.float32), rate, subtype=subtype)
    return path


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


# ---- crops ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [16000, 24000, 44100])
def test_crop_shape_and_rate(tmp_path, rate):
    path = tone(tmp_path / f"a{rate}.wav", rate, 1.5, freq=1000.0)
    ds = AudioCropDataset(path.parent, CropConfig(num_samples=12000, loudness="none"))
    item = ds[0]
    assert item["audio"].shape == (1, 12000) and item["audio"].dtype == torch.float32
    assert abs(dominant_hz(item["audio"][0].numpy(), 24000) - 1000.0) < 4  # resampled, not relabelled
    assert item["path"] == str(path) and item["category"] is None


def test_crop_is_the_same_samples_as_the_whole_file_resampled(tmp_path):
    from tokenwave.audio import AudioConversionWarning, load_audio

    rng = np.random.default_rng(0)
    path = tmp_path / "noise.wav"
    sf.write(path, (0.1 * rng.standard_normal((44100 * 2, 2))).astype(np.float32), 44100, subtype="FLOAT")
    with pytest.warns(AudioConversionWarning, match="2 channels averaged"):
        full = load_audio(path, 24000)[0]
    ds = AudioCropDataset(tmp_path, CropConfig(num_samples=4800, loudness="none"), seed=3, epoch_size=4)
    for index in range(4):
        crop = ds[index]["audio"][0].numpy()
        starts = [s for s in range(len(full) - 4800 + 1) if abs(full[s] - crop[0]) < 1e-6
                  and np.abs(full[s:s + 4800] - crop).max() < 1e-5]
        assert starts, "the crop is a window of the resampled file"


def test_stereo_is_averaged(tmp_path):
    path = tone(tmp_path / "st.wav", 24000, 0.5, channels=2, subtype="FLOAT")
    left_right = sf.read(path, dtype="float32")[0]
    ds = AudioCropDataset(tmp_path, CropConfig(num_samples=6000, loudness="none"), train=False)
    np.testing.assert_allclose(ds[0]["audio"][0].numpy(), left_right[:6000].mean(axis=1), atol=1e-7)


@pytest.mark.parametrize("short", ["tile", "pad"])
def test_short_files_tiled_or_padded(tmp_path, short):
    path = tone(tmp_path / "short.wav", 24000, 0.1, subtype="FLOAT")  # 2400 samples
    x = sf.read(path, dtype="float32")[0]
    for train in (True, False):
        out = AudioCropDataset(tmp_path, CropConfig(num_samples=6000, short=short, loudness="none"),
                               train=train)[0]["audio"][0].numpy()
        expected = np.tile(x, 3)[:6000] if short == "tile" else np.concatenate([x, np.zeros(3600, np.float32)])
        np.testing.assert_array_equal(out, expected)


def test_validation_crop_and_whole_file_cap(tmp_path):
    path = tone(tmp_path / "v.wav", 24000, 1.0, subtype="FLOAT")
    x = sf.read(path, dtype="float32")[0]
    first = AudioCropDataset(tmp_path, CropConfig(num_samples=5000, loudness="none"), train=False)
    np.testing.assert_array_equal(first[0]["audio"][0].numpy(), x[:5000])
    capped = AudioCropDataset(tmp_path, CropConfig(num_samples=5000, loudness="none", val_max_samples=20000),
                              train=False)
    assert capped[0]["audio"].shape == (1, 20000)
    whole = AudioCropDataset(tmp_path, CropConfig(num_samples=5000, loudness="none", val_max_samples=10**6),
                             train=False)
    assert whole[0]["audio"].shape == (1, 24000)
    batch = collate([whole[0], first[0]])
    assert batch["audio"].shape == (2, 1, 24000) and batch["lengths"].tolist() == [24000, 5000]
    assert batch["audio"][1, 0, 5000:].abs().sum() == 0


# ---- loudness ------------------------------------------------------------------------------------------

def test_peak_normalisation_hits_its_range_and_validation_level(tmp_path):
    tone(tmp_path / "p.wav", 24000, 1.0, amp=0.05)
    train = AudioCropDataset(tmp_path, CropConfig(num_samples=4800), epoch_size=20)
    peaks = [20 * math.log10(float(train[i]["audio"].abs().max())) for i in range(20)]
    assert all(-6.0 - 1e-4 <= p <= -1.0 + 1e-4 for p in peaks) and max(peaks) - min(peaks) > 1
    val = AudioCropDataset(tmp_path, CropConfig(num_samples=4800, val_level=-3.0), train=False)
    assert 20 * math.log10(float(val[0]["audio"].abs().max())) == pytest.approx(-3.0, abs=1e-4)
    mid = AudioCropDataset(tmp_path, CropConfig(num_samples=4800), train=False)
    assert 20 * math.log10(float(mid[0]["audio"].abs().max())) == pytest.approx(-3.5, abs=1e-4)


def test_gain_is_capped_and_silence_stays_silent():
    config = CropConfig(max_gain_db=20.0)
    quiet = np.full(100, 1e-4, np.float32)  # -80 dBFS: would need +74 dB
    assert float(np.abs(normalize(quiet, config, None)).max()) == pytest.approx(1e-3, rel=1e-4)
    assert not normalize(np.zeros(100, np.float32), config, None).any()


def test_lufs_normalisation_hits_its_target():
    pyloudnorm = pytest.importorskip("pyloudnorm")
    rng = np.random.default_rng(1)
    x = (0.01 * rng.standard_normal(48000)).astype(np.float32)
    config = CropConfig(loudness="lufs", lufs=(-30.0, -20.0))
    for seed in range(3):
        y = normalize(x, config, np.random.default_rng(seed))
        target = np.random.default_rng(seed).uniform(-30.0, -20.0)
        assert pyloudnorm.Meter(24000).integrated_loudness(y.astype(np.float64)) == pytest.approx(target, abs=0.05)


def test_lufs_without_pyloudnorm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyloudnorm", None)
    with pytest.raises(ImportError, match="pyloudnorm"):
        CropConfig(loudness="lufs")


# ---- determinism ---------------------------------------------------------------------------------------

def test_same_seed_epoch_index_same_item_and_epochs_differ(tmp_path):
    for i in range(3):
        tone(tmp_path / f"f{i}.wav", 16000, 2.0, freq=300 + 100 * i)
    config = CropConfig(num_samples=4800)
    a, b = AudioCropDataset(tmp_path, config, seed=7), AudioCropDataset(tmp_path, config, seed=7)
    for i in range(3):
        assert torch.equal(a[i]["audio"], b[i]["audio"])
    before = [a[i]["audio"] for i in range(3)]
    a.set_epoch(1)
    assert all(not torch.equal(x, a[i]["audio"]) for i, x in enumerate(before))
    assert not torch.equal(before[0], AudioCropDataset(tmp_path, config, seed=8)[0]["audio"])
    b.load_state_dict(a.state_dict())
    assert torch.equal(a[2]["audio"], b[2]["audio"])


# ---- streaming -----------------------------------------------------------------------------------------

def _corpus(folder: Path, count: int) -> list[str]:
    return [str(tone(folder / f"c{i:02d}.wav", 8000, 0.2 + 0.01 * i, freq=200 + 10 * i)) for i in range(count)]


def _run(ds, *, workers: int, batch_size: int, limit: int | None = None) -> list[dict]:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    batches = []
    for batch in loader:
        batches.append(batch)
        ds.advance(batch)
        if limit is not None and len(batches) == limit:
            break
    return batches


def test_streaming_covers_every_file_once_across_ranks_and_workers(tmp_path):
    files = _corpus(tmp_path, 11)
    config = CropConfig(sample_rate=8000, num_samples=800)
    seen = []
    for rank in range(2):
        ds = StreamingAudioDataset(tmp_path, config, seed=5, batch_size=2, rank=rank, world_size=2)
        ds.set_epoch(3)
        paths = [p for b in _run(ds, workers=2, batch_size=2) for p in b["path"]]
        assert len(paths) == len(set(paths)) == (6 if rank == 0 else 5)
        seen += paths
    assert sorted(seen) == sorted(files)
    one = StreamingAudioDataset(tmp_path, config, seed=5, batch_size=2, rank=0, world_size=2)
    one.set_epoch(3)
    serial = [p for b in _run(one, workers=0, batch_size=2) for p in b["path"]]
    assert serial == seen[:6], "the order does not depend on the number of workers"
    even = StreamingAudioDataset(tmp_path, config, batch_size=2, rank=1, world_size=2, even=True)
    assert len(even) == len(StreamingAudioDataset(tmp_path, config, rank=0, world_size=2, even=True)) == 5


def test_streaming_epochs_reshuffle_and_crops_per_file(tmp_path):
    _corpus(tmp_path, 6)
    config = CropConfig(sample_rate=8000, num_samples=400)
    ds = StreamingAudioDataset(tmp_path, config, crops_per_file=3, shuffle_buffer=4)
    first = [item["path"] for item in ds]
    ds.set_epoch(1)
    second = [item["path"] for item in ds]
    assert sorted(first) == sorted(second) and first != second
    assert all(first.count(p) == 3 for p in set(first))


def test_streaming_resume_continues_identically(tmp_path):
    _corpus(tmp_path, 9)
    config = CropConfig(sample_rate=8000, num_samples=800)
    make = lambda: StreamingAudioDataset(tmp_path, config, seed=11, batch_size=2)  # noqa: E731
    full = _run(make(), workers=2, batch_size=2)
    interrupted = make()
    head = _run(interrupted, workers=2, batch_size=2, limit=3)
    resumed = make()
    resumed.load_state_dict(interrupted.state_dict())
    assert resumed.state_dict()["position"] == 6
    tail = _run(resumed, workers=2, batch_size=2)
    assert len(head) + len(tail) == len(full) == 5
    for a, b in zip(full, head + tail):
        assert a["path"] == b["path"] and torch.equal(a["audio"], b["audio"])


# ---- bad files -----------------------------------------------------------------------------------------

def _bad_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x01junk" * 50)
    nan = np.full(4000, np.nan, np.float32)
    sf.write(folder / "nan.wav", nan, 8000, subtype="FLOAT")
    return [folder / "corrupt.wav", folder / "empty.wav", folder / "nan.wav"]


def test_bad_files_are_skipped_named_and_counted(tmp_path):
    bad = _bad_files(tmp_path)
    good = tone(tmp_path / "z_good.wav", 8000, 0.5)
    config = CropConfig(sample_rate=8000, num_samples=800)
    ds = AudioCropDataset(tmp_path, config, train=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
    assert all(item["path"] == str(good) for item in items)
    assert ds.skipped == 3 and sorted(ds.skipped_files) == sorted(map(str, bad))
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedAudioWarning)]
    assert len(messages) == 3 and all(any(str(p) in m for m in messages) for p in bad)
    assert items[0]["skipped"] == [str(bad[0]), str(bad[1]), str(bad[2])]
    assert collate(items[:2])["skipped"] == [str(p) for p in bad] + [str(bad[1]), str(bad[2])]
    stream = StreamingAudioDataset(tmp_path, config, seed=1)
    with pytest.warns(SkippedAudioWarning):
        assert [item["path"] for item in stream] == [str(good)] * 4


def test_all_bad_files_raise_a_clear_error(tmp_path):
    _bad_files(tmp_path)
    ds = AudioCropDataset(tmp_path, CropConfig(sample_rate=8000, num_samples=800))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedAudioWarning)
        with pytest.raises(RuntimeError, match="none of the 3 training files could be read"):
            ds[0]


# ---- sources -------------------------------------------------------------------------------------------

def test_manifest_relative_paths_split_category_and_weights(tmp_path):
    tone(tmp_path / "data" / "speech" / "a.wav", 8000, 0.3)
    tone(tmp_path / "data" / "music" / "b.wav", 8000, 0.3)
    tone(tmp_path / "data" / "music" / "c.wav", 8000, 0.3)
    manifest = tmp_path / "data" / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["path", "category", "split", "weight"], ["speech/a.wav", "speech", "train", "3"],
                     ["music/b.wav", "music", "train", "1"], ["music/c.wav", "music", "val", "1"],
                     ["music/c.wav", "music", "train", "0"]])
    source = read_source(manifest, split="train")
    assert [(Path(f.path).name, f.category, f.weight) for f in source.files] == [("a.wav", "speech", 3.0),
                                                                                ("b.wav", "music", 1.0)]
    assert Path(source.files[0].path).is_absolute() and Path(source.files[0].path).exists()
    assert len(read_source(manifest).files) == 3
    folder = read_source(tmp_path / "data")
    assert sorted(f.category for f in folder.files) == ["music", "music", "speech"]
    with pytest.raises(ValueError, match="split"):
        read_source(tmp_path / "data", split="train")

    config = CropConfig(sample_rate=8000, num_samples=400)
    weighted = AudioCropDataset(sources_from({"path": manifest, "split": "train"}), config, epoch_size=400)
    assert weighted.probs.tolist() == [0.75, 0.25]
    draws = [int(weighted._draw(weighted._rng(i))) for i in range(400)]
    assert 0.68 < draws.count(0) / 400 < 0.82
    assert Path(weighted[0]["path"]).name in ("a.wav", "b.wav")
    mixed = AudioCropDataset([{"path": tmp_path / "data" / "speech", "weight": 1.0},
                              {"path": tmp_path / "data" / "music", "weight": 3.0}], config)
    assert mixed.probs.tolist() == [0.25, 0.375, 0.375]
    by_category = AudioCropDataset([{"path": manifest, "categories": ["speech"], "weight": 1.0},
                                    {"path": manifest, "categories": ["music"], "weight": 1.0}], config)
    assert [Path(f.path).name for f in by_category.files] == ["a.wav", "b.wav", "c.wav"]
    assert by_category.probs.tolist() == [0.5, 0.25, 0.25]  # each category half, whatever its size
    with pytest.raises(ValueError, match="categories"):
        read_source(manifest, categories=["sound"])


# ---- scripts/build-trainset ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def builder():
    path = REPO / "scripts" / "build-trainset"
    loader = importlib.machinery.SourceFileLoader("build_trainset", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("build_trainset", loader))
    sys.modules["build_trainset"] = module
    loader.exec_module(module)
    yield module
    del sys.modules["build_trainset"]


SHA = {name: f"{i:064x}" for i, name in enumerate(["reserved", "corpus", "copy", "free", "dup", "nc", "short"], 1)}


def _fake_index(builder) -> tuple[list, list]:
    pkg = builder.Package("fake-data", (("*/silence/*", None), ("*/voices/*", "speech"), ("*", "sound")))
    files = [("/usr/share/fake/voices/a.ogg", SHA["reserved"]), ("/usr/share/fake/voices/b.ogg", SHA["corpus"]),
             ("/usr/share/fake/voices/c.ogg", SHA["copy"]), ("/usr/share/fake/sfx/d.ogg", SHA["free"]),
             ("/usr/share/fake/sfx/d2.ogg", SHA["free"]), ("/usr/share/fake/silence/e.ogg", SHA["dup"]),
             ("/usr/share/fake/nc/f.ogg", SHA["nc"]), ("/usr/share/fake/sfx/g.ogg", SHA["short"])]
    copyright_text = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
                      "Files: *\nCopyright: someone\nLicense: GPL-2+\n\n"
                      "Files: data/nc/*\nCopyright: someone else\nLicense: CC-BY-NC-3.0\n")
    index = {"package": "fake-data", "version": "1.0-1", "copyright": copyright_text,
             "files": [{"source_file": p, "sha256": s, "seconds": 0.5 if s == SHA["short"] else 3.0,
                        "cache_path": "x", "sample_rate": 16000, "channels": 1} for p, s in files]}
    return [pkg], [index]


def test_builder_exclusions_from_reserved_list_and_corpus_manifest(builder, tmp_path):
    reserved = tmp_path / "reserved_sources.sha256"
    reserved.write_text(f"# held out\n{SHA['reserved']}\n{'f' * 64}  some/file.ogg\n")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "category,clip_path,source_package,source_file\n"
        "speech,speech/x.wav,fake-data,/usr/share/fake/voices/b.ogg ; /usr/share/other/z.ogg[1.0-11.0s]\n"
        "sound,sound/y.wav,other-data,/usr/share/o/p.pk3::sound/q.ogg[0.0-4.3s]\n")
    ex = builder.Exclusions(builder.read_reserved(reserved), builder.read_corpus_sources(manifest))
    assert ex.reserved == {SHA["reserved"], "f" * 64}
    assert ex.corpus_paths == {"fake-data": {"/usr/share/fake/voices/b.ogg", "/usr/share/other/z.ogg"},
                               "other-data": {"/usr/share/o/p.pk3::sound/q.ogg"}}
    ex.corpus_hashes = {SHA["copy"]}  # what gather() finds: the content of a corpus source elsewhere

    packages, indexes = _fake_index(builder)
    skipped = []
    chosen = builder.classify(packages, indexes, ex, __import__("re").compile(builder.FREE_LICENSES),
                              builder.ClipParams(), skipped)
    assert [c["source_file"] for c in chosen["sound"]] == ["/usr/share/fake/sfx/d.ogg"]
    assert chosen["speech"] == [] and chosen["sound"][0]["license"] == "GPL-2+"
    reasons = {s["source_file"].rsplit("/", 1)[1]: s["reason"] for s in skipped}
    assert reasons == {
        "a.ogg": "reserved (sha256 in the reserved list)",
        "b.ogg": "evaluation corpus source (same package and path)",
        "c.ogg": "evaluation corpus source (same content)",
        "d2.ogg": "duplicate of fake-data:/usr/share/fake/sfx/d.ogg",
        "e.ogg": "no category (left out by the package's rules)",
        "f.ogg": "license not accepted: CC-BY-NC-3.0",
        "g.ogg": "shorter than 1 s",
    }
    with pytest.raises(ValueError, match="not a sha256"):
        (tmp_path / "bad.sha256").write_text("abc\n")
        builder.read_reserved(tmp_path / "bad.sha256")


def test_builder_refuses_without_a_reserved_list(builder, tmp_path, monkeypatch):
    import argparse

    monkeypatch.setattr(builder, "SHARED_CORPUS", tmp_path / "nowhere")
    args = argparse.Namespace(no_reserved=False, reserved=None, corpus_manifest=None)
    with pytest.raises(SystemExit, match="--no-reserved"):
        builder.load_exclusions(args)
    args.no_reserved = True
    ex, facts = builder.load_exclusions(args)
    assert not ex.reserved and facts["reserved"] is None


def test_builder_dep5_licenses_and_rcc_members(builder):
    paragraphs = builder.parse_dep5("Format: x\n\nFiles: *\nLicense: GPL-2\n\n"
                                    "Files: share/game/Data/Sounds/*\nLicense: GFDL-1.3\n\n"
                                    "Files: game/*\nLicense: MIT\n\nFiles:\n base/music/a.ogg\nLicense: CC0\n")
    assert builder.dep5_license(paragraphs, "/usr/share/games/game/Data/Sounds/v/x.ogg") == "GFDL-1.3"
    assert builder.dep5_license(paragraphs, "/usr/share/games/game/Data/Music/y.ogg") == "MIT"
    assert builder.dep5_license(paragraphs, "/usr/share/g/base/0music.pk3::music/a.ogg") == "CC0"
    assert builder.parse_dep5("This package was debianized by ...") is None

    # a version-1 Qt resource: root -> "dir" -> "a.ogg" (stored), "b.ogg" (zlib)
    import zlib

    def name(text):
        raw = text.encode("utf-16-be")
        return struct.pack(">HI", len(text), 0) + raw

    names = name("dir") + name("a.ogg") + name("b.ogg")
    offsets = [0, len(name("dir")), len(name("dir")) + len(name("a.ogg"))]
    packed = zlib.compress(b"BBBB")
    payload = struct.pack(">I", 4) + b"AAAA" + struct.pack(">I", len(packed) + 4) + struct.pack(">I", 4) + packed
    tree = (struct.pack(">IHII", 0, 2, 1, 1) + struct.pack(">IHII", offsets[0], 2, 2, 2)
            + struct.pack(">IHHHI", offsets[1], 0, 0, 0, 0) + struct.pack(">IHHHI", offsets[2], 1, 0, 0, 8))
    header = 20
    blob = b"qres" + struct.pack(">IIII", 1, header, header + len(tree), header + len(tree) + len(payload))
    members = dict(builder.rcc_members(blob + tree + payload + names))
    assert members == {"dir/a.ogg": b"AAAA", "dir/b.ogg": b"BBBB"}


def test_builder_pieces_trim_silence_and_cut(builder):
    rate = builder.SAMPLE_RATE
    audio = np.zeros(rate * 30, np.float32)
    audio[rate * 2: rate * 27] = 0.1  # 25 s of sound between 2 s and 3 s of silence
    params = builder.ClipParams(clip_seconds=10, min_seconds=1, max_seconds_per_source=60)
    cuts = builder.pieces(audio, params)
    assert cuts[0][0] == 2 * rate and cuts[-1][1] == 27 * rate and len(cuts) == 3
    assert all(b - a <= 10 * rate for a, b in cuts)
    capped = builder.pieces(audio, builder.ClipParams(max_seconds_per_source=5))
    assert capped == [(2 * rate + 10 * rate, 2 * rate + 15 * rate)]
    assert builder.pieces(np.zeros(rate * 3, np.float32), params) == []
    assert builder.split_of("0" * 64, 0.02) == "val" and builder.split_of("f" * 64, 0.02) == "train"
