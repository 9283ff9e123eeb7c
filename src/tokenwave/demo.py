"""The main job of the README: encode and decode the shipped example audio and say what happened."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

EXAMPLE_AUDIO = "example_speech_en.wav"


def example_audio_path() -> Path:
    """Path of the shipped example recording (see ``tokenwave/assets/README.md`` for its license)."""
    return Path(str(resources.files("tokenwave") / "assets" / EXAMPLE_AUDIO))


def run_demo(
    model: str | None,
    audio_path: Path | None,
    output_dir: Path,
    *,
    device: str = "cpu",
    bandwidth: float | None = None,
    echo=print,
) -> dict:
    """Encode and decode one file, write the codes (``.npy``) and the decoded audio (``.wav``).

    Returns a summary dict (also printed through ``echo``).
    """
    import soundfile as sf

    from .loading import default_model, load_tokenizer

    model_id = model or default_model()
    audio_path = audio_path or example_audio_path()
    t0 = time.perf_counter()
    tok = load_tokenizer(model_id, device=device)
    t_load = time.perf_counter() - t0
    wave, rate = sf.read(str(audio_path), dtype="float32", always_2d=True)
    if rate != tok.sample_rate:
        raise ValueError(f"{audio_path} is at {rate} Hz; this demo needs {tok.sample_rate} Hz audio")
    mono = torch.from_numpy(wave.mean(axis=1))
    t0 = time.perf_counter()
    enc = tok.encode(mono, bandwidth=bandwidth)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    dec = tok.decode(enc, crop=True)
    t_dec = time.perf_counter() - t0
    out = dec.unbatch()[0].float().cpu().numpy()

    output_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(audio_path).stem
    codes_path = output_dir / f"{stem}.codes.npy"
    wav_path = output_dir / f"{stem}.decoded.wav"
    np.save(codes_path, enc.unbatch()[0].cpu().numpy().astype(np.int16), allow_pickle=False)
    sf.write(str(wav_path), out, tok.sample_rate, subtype="FLOAT")

    seconds = mono.shape[0] / tok.sample_rate
    ref = mono.numpy()[: out.shape[0]]
    snr = 10 * np.log10(np.sum(ref**2) / max(np.sum((ref - out) ** 2), 1e-20))
    summary = {
        "model": model_id,
        "input": str(audio_path),
        "seconds": round(seconds, 3),
        "codes_shape": list(enc.codes.shape[1:]),
        "frame_rate": tok.frame_rate,
        "kbps": enc.num_codebooks * np.log2(tok.codebook_size) * tok.frame_rate / 1000,
        "load_s": round(t_load, 2),
        "encode_s": round(t_enc, 2),
        "decode_s": round(t_dec, 2),
        "snr_db": round(float(snr), 2),
        "codes_file": str(codes_path),
        "decoded_file": str(wav_path),
    }
    echo(f"model        {model_id} ({type(tok).__name__}, {tok.sample_rate} Hz, {tok.frame_rate} frames/s)")
    echo(f"input        {audio_path} ({seconds:.2f} s)")
    echo(
        f"encoded      {enc.num_codebooks} codebooks x {int(enc.lengths[0])} frames "
        f"= {summary['kbps']:.2f} kbps in {t_enc:.2f} s ({seconds / max(t_enc, 1e-9):.1f}x real time)"
    )
    echo(f"decoded      {out.shape[0]} samples in {t_dec:.2f} s ({seconds / max(t_dec, 1e-9):.1f}x real time)")
    echo(f"SNR          {snr:.2f} dB (decoded vs input)")
    echo(f"wrote        {codes_path}")
    echo(f"wrote        {wav_path}")
    return summary
