"""Losses: mel filterbanks against librosa and the eval module, the multi-scale mel loss against
descript-audiotools goldens, invariants (zero on equal inputs, gradients, batch splitting), and the
adversarial / feature-matching / semantic formulas by hand and against vocos 0.1.0."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tokenwave.losses import (
    MelSpectrogram,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    adversarial_losses,
    cosine_distance_loss,
    dac_mel_loss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    least_squares_discriminator_loss,
    least_squares_generator_loss,
    log_magnitude_loss,
    mel_filterbank,
    semantic_distillation_loss,
    spectral_convergence_loss,
    stft,
    stft_magnitude,
    straight_through,
    wavtokenizer_mel_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = json.loads((ROOT / "tests" / "fixtures" / "audiotools_goldens.json").read_text())


def _audio(batch: int, length: int, seed: int) -> torch.Tensor:
    return 0.1 * torch.randn(batch, length, generator=torch.Generator().manual_seed(seed))


# -------------------------------------------------------------------------------------------- mel filterbank
def _reference_filterbank(sr: int, n_fft: int, n_mels: int, htk: bool, slaney_norm: bool) -> np.ndarray:
    """The triangle formula written independently in float64 (numpy), ``[n_freqs, n_mels]``."""
    if htk:
        to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
        to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    else:
        step = np.log(6.4) / 27.0
        to_mel = lambda f: np.where(f >= 1000, 15 + np.log(np.maximum(f, 1e-9) / 1000) / step, 3 * f / 200)  # noqa: E731
        to_hz = lambda m: np.where(m >= 15, 1000 * np.exp(step * (m - 15)), 200 * m / 3)  # noqa: E731
    edges = to_hz(np.linspace(to_mel(0.0), to_mel(sr / 2), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    fb = np.zeros((freqs.size, n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m : m + 3]
        fb[:, m] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
        if slaney_norm:
            fb[:, m] *= 2 / (hi - lo)
    return fb


@pytest.mark.parametrize(("mel_scale", "norm"), [("htk", None), ("slaney", "slaney"), ("htk", "slaney")])
def test_filterbank_formula(mel_scale, norm):
    want = _reference_filterbank(24000, 1024, 100, mel_scale == "htk", norm == "slaney")
    got64 = mel_filterbank(sample_rate=24000, n_fft=1024, n_mels=100, mel_scale=mel_scale, norm=norm,
                           dtype=torch.float64)
    np.testing.assert_allclose(got64.numpy(), want, rtol=0, atol=1e-12 * want.max())
    got32 = mel_filterbank(sample_rate=24000, n_fft=1024, n_mels=100, mel_scale=mel_scale, norm=norm)
    assert got32.dtype == torch.float32 and got32.shape == (513, 100)
    np.testing.assert_allclose(got32.numpy(), want, rtol=0, atol=2e-5 * want.max())


def test_filterbank_equals_librosa():
    librosa = pytest.importorskip("librosa")
    for htk, norm, mel_scale in [(True, None, "htk"), (False, "slaney", "slaney")]:
        ref = librosa.filters.mel(sr=24000, n_fft=1024, n_mels=100, htk=htk, norm=norm, dtype=np.float64).T
        ours = mel_filterbank(sample_rate=24000, n_fft=1024, n_mels=100, mel_scale=mel_scale, norm=norm,
                              dtype=torch.float64).numpy()
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12 * ref.max())


def test_slaney_filterbank_equals_eval_metric_one():
    from tokenwave.eval.metrics.signal import mel_filterbank as eval_filterbank

    for sr, n_fft, n_mels in [(24000, 2048, 150), (44100, 512, 80), (16000, 32, 5)]:
        ours = mel_filterbank(sample_rate=sr, n_fft=n_fft, n_mels=n_mels, mel_scale="slaney", norm="slaney",
                              dtype=torch.float64)
        np.testing.assert_allclose(ours.numpy().T, eval_filterbank(sr, n_fft, n_mels), rtol=0, atol=1e-12)


def test_mel_spectrogram_equals_librosa():
    """WavTokenizer's MelSpectrogram (torchaudio defaults: periodic Hann, center, reflect, power 1, HTK, no norm)."""
    librosa = pytest.importorskip("librosa")
    x = _audio(1, 12000, 0)
    ours = MelSpectrogram(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100)(x)[0].numpy()
    ref = librosa.feature.melspectrogram(y=x[0].double().numpy(), sr=24000, n_fft=1024, hop_length=256,
                                         n_mels=100, power=1.0, htk=True, norm=None, center=True, pad_mode="reflect")
    assert ours.shape == ref.shape == (100, 1 + 12000 // 256)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * ref.max())


# ------------------------------------------------------------------------------------------ multi-scale mel
def _audiotools_cases():
    spec = importlib.util.spec_from_file_location("audiotools_make_goldens",
                                                  ROOT / "tools" / "goldens" / "audiotools" / "make_goldens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", GOLDENS["cases"], ids=[c["name"] for c in GOLDENS["cases"]])
def test_multiscale_mel_equals_audiotools(case):
    """``MelSpectrogramLoss()`` of descript-audiotools 0.7.2 (which DAC's loss copies), its defaults spelled out."""
    ref, est, sr = _audiotools_cases().build_case(case["name"])
    loss = MultiScaleMelLoss(sample_rate=sr, window_lengths=(2048, 512), n_mels=(150, 80), pow=2.0, mag_weight=1.0)
    got = loss(torch.from_numpy(est)[None], torch.from_numpy(ref)[None])
    assert float(got) == pytest.approx(case["mel_distance"], rel=2e-6)  # measured <= 4e-7


@pytest.fixture(scope="module")
def mel_losses():
    return {"dac": dac_mel_loss(), "wavtokenizer": wavtokenizer_mel_loss()}


@pytest.mark.parametrize("name", ["dac", "wavtokenizer"])
def test_mel_loss_zero_on_equal_positive_otherwise(mel_losses, name):
    y = _audio(2, 6000, 1)
    assert float(mel_losses[name](y, y.clone())) == 0.0
    assert float(mel_losses[name](y + 0.01 * _audio(2, 6000, 2), y)) > 0.0


@pytest.mark.parametrize("name", ["dac", "wavtokenizer"])
def test_mel_loss_is_mean_over_items(mel_losses, name):
    y, y_hat = _audio(3, 6000, 3), _audio(3, 6000, 4)
    whole = mel_losses[name](y_hat, y)
    items = torch.stack([mel_losses[name](y_hat[b : b + 1], y[b : b + 1]) for b in range(3)])
    torch.testing.assert_close(whole, items.mean(), rtol=1e-5, atol=0)
    torch.testing.assert_close(mel_losses[name](y_hat[:, None], y[:, None]), whole)  # [B, 1, L] too


def test_wavtokenizer_mel_loss_by_hand():
    y, y_hat = _audio(2, 5000, 5), _audio(2, 5000, 6)
    fb = mel_filterbank(sample_rate=24000, n_fft=1024, n_mels=100)
    win = torch.hann_window(1024)

    def mel(x):
        mag = torch.stft(x, 1024, 256, window=win, center=True, pad_mode="reflect", return_complex=True).abs()
        return (mag.transpose(1, 2) @ fb).transpose(1, 2)

    want = (mel(y).clamp(min=1e-7).log() - mel(y_hat).clamp(min=1e-7).log()).abs().mean()
    torch.testing.assert_close(wavtokenizer_mel_loss()(y_hat, y), want)


def test_mel_loss_gradient(mel_losses):
    y = _audio(2, 4000, 7)
    y_hat = (y + 0.05 * _audio(2, 4000, 8)).requires_grad_()
    (mel_losses["dac"](y_hat, y) + mel_losses["wavtokenizer"](y_hat, y)).backward()
    assert torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------- multi-resolution STFT
def test_stft_loss_zero_on_equal_positive_otherwise():
    loss = MultiResolutionSTFTLoss(waveform_weight=1.0)
    y = _audio(2, 6000, 9)
    same = loss(y, y.clone())
    assert all(float(v) == 0.0 for v in same)
    diff = loss(y + 0.01 * _audio(2, 6000, 10), y)
    assert all(float(v) > 0.0 for v in diff)
    torch.testing.assert_close(diff.total, diff.spectral_convergence + diff.log_magnitude + diff.waveform)


def test_stft_loss_by_hand():
    """Parallel WaveGAN's formulas for one resolution, written out."""
    y, y_hat = _audio(2, 5000, 11), _audio(2, 5000, 12)
    win = torch.hann_window(600)

    def mag(x):
        s = torch.stft(x, 1024, 120, 600, win, center=True, pad_mode="reflect", return_complex=True)
        return torch.sqrt(torch.clamp(s.real**2 + s.imag**2, min=1e-7))

    sc = torch.norm(mag(y) - mag(y_hat), p="fro") / torch.norm(mag(y), p="fro")
    lm = F.l1_loss(torch.log(mag(y)), torch.log(mag(y_hat)))
    got = MultiResolutionSTFTLoss([(1024, 120, 600)])(y_hat, y)
    torch.testing.assert_close(got.spectral_convergence, sc)
    torch.testing.assert_close(got.log_magnitude, lm)
    torch.testing.assert_close(got.total, sc + lm)
    s, s_hat = (stft_magnitude(a, n_fft=1024, hop_length=120, window=win) for a in (y, y_hat))
    torch.testing.assert_close(spectral_convergence_loss(s_hat, s), sc)
    torch.testing.assert_close(log_magnitude_loss(s_hat, s), lm)


def test_stft_loss_gradient():
    y = _audio(2, 4000, 13)
    y_hat = (y + 0.05 * _audio(2, 4000, 14)).requires_grad_()
    MultiResolutionSTFTLoss(waveform_weight=0.5)(y_hat, y).total.backward()
    assert torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0


@pytest.mark.parametrize("length", [1000, 1023, 1024, 1100])
def test_match_stride_framing(length):
    """audiotools' ``match_stride``: ceil(L / hop) frames, frame t centred on t * hop + hop / 2."""
    x = torch.randn(2, length)
    spec = stft(x, n_fft=256, hop_length=64, window=torch.hann_window(256), match_stride=True)
    assert spec.shape == (2, 129, -(-length // 64))
    plain = stft(x, n_fft=256, hop_length=64, window=torch.hann_window(256))
    assert plain.shape == (2, 129, 1 + length // 64)
    with pytest.raises(ValueError, match="hop_length == n_fft // 4"):
        stft(x, n_fft=256, hop_length=100, window=torch.hann_window(256), match_stride=True)


# ------------------------------------------------------------------------------------------------ adversarial
REAL = [torch.tensor([[2.0, 0.5], [-1.0, 1.0]]), torch.tensor([0.0, 3.0, -0.5])]
FAKE = [torch.tensor([[-2.0, 0.2], [0.5, -0.5]]), torch.tensor([1.5, -1.0, 0.0])]


def test_hinge_by_hand():
    d = hinge_discriminator_loss(REAL, FAKE)
    # relu(1 - real): [0, .5, 2, 0] -> .625 ; [1, 0, 1.5] -> 2.5/3
    # relu(1 + fake): [0, 1.2, 1.5, .5] -> .8 ; [2.5, 0, 1] -> 3.5/3
    assert [float(t) for t in d.real] == pytest.approx([0.625, 2.5 / 3])
    assert [float(t) for t in d.fake] == pytest.approx([0.8, 3.5 / 3])
    assert float(d.total) == pytest.approx(0.625 + 2.5 / 3 + 0.8 + 3.5 / 3)
    assert float(hinge_discriminator_loss(REAL, FAKE, reduction="mean").total) == pytest.approx(float(d.total) / 2)
    g = hinge_generator_loss(FAKE)  # relu(1 - fake): [3, .8, .5, 1.5] -> 1.45 ; [0, 2, 1] -> 1
    assert [float(t) for t in g.per_discriminator] == pytest.approx([1.45, 1.0])
    assert float(g.total) == pytest.approx(2.45)


def test_least_squares_by_hand():
    d = least_squares_discriminator_loss(REAL, FAKE)
    # (1 - real)^2: [1, .25, 4, 0] -> 1.3125 ; [1, 4, 2.25] -> 7.25/3
    # fake^2: [4, .04, .25, .25] -> 1.135 ; [2.25, 1, 0] -> 3.25/3
    assert [float(t) for t in d.real] == pytest.approx([1.3125, 7.25 / 3])
    assert [float(t) for t in d.fake] == pytest.approx([1.135, 3.25 / 3])
    assert float(d.total) == pytest.approx(1.3125 + 7.25 / 3 + 1.135 + 3.25 / 3)
    g = least_squares_generator_loss(FAKE)  # (1 - fake)^2: [9, .64, .25, 2.25] -> 3.035 ; [.25, 4, 1] -> 5.25/3
    assert [float(t) for t in g.per_discriminator] == pytest.approx([3.035, 5.25 / 3])
    assert adversarial_losses("least_squares") == (least_squares_discriminator_loss, least_squares_generator_loss)
    with pytest.raises(ValueError, match="unknown adversarial loss"):
        adversarial_losses("wasserstein")


def test_feature_matching_by_hand_and_real_detached():
    real = [[torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([[0.0, 4.0]], requires_grad=True)],
            [torch.tensor([3.0], requires_grad=True)]]
    fake = [[torch.tensor([1.5, 1.0], requires_grad=True), torch.tensor([[1.0, 4.0]], requires_grad=True)],
            [torch.tensor([1.0], requires_grad=True)]]
    loss = feature_matching_loss(real, fake)  # (.5 + 1) / 2 + (1 + 0) / 2 + 2 = 3.25
    assert loss.item() == pytest.approx(3.25)
    loss.backward()
    assert all(t.grad is None for disc in real for t in disc)
    assert fake[0][0].grad.tolist() == [0.5, -0.5]
    with torch.no_grad():
        assert float(feature_matching_loss(real, fake, exclude_logits=True)) == pytest.approx(0.75)
        assert float(feature_matching_loss(real, fake, reduction="mean")) == pytest.approx(3.25 / 2)
        assert float(feature_matching_loss(real, [[t.clone() for t in d] for d in real])) == 0.0


def _vocos_loss():
    """``vocos.loss`` without running ``vocos/__init__`` (its pretrained wrapper needs torchaudio's mel helpers);
    ``vocos.loss`` itself only needs ``import torchaudio`` (tests/stubs provides it)."""
    if importlib.util.find_spec("vocos") is None:
        pytest.skip("vocos==0.1.0 (test-only dependency) is not installed")
    added = "vocos" not in sys.modules
    if added:
        pkg = types.ModuleType("vocos")
        pkg.__path__ = list(importlib.util.find_spec("vocos").submodule_search_locations)
        sys.modules["vocos"] = pkg
    try:
        return importlib.import_module("vocos.loss")
    finally:
        if added:
            sys.modules.pop("vocos", None)


def test_adversarial_losses_equal_vocos():
    vocos_loss = _vocos_loss()
    gen = torch.Generator().manual_seed(15)
    real = [torch.randn(2, n, generator=gen) for n in (7, 11, 5)]
    fake = [torch.randn(2, n, generator=gen) for n in (7, 11, 5)]
    fr = [[torch.randn(2, 3, n, generator=gen) for n in (4, 6)] for _ in range(3)]
    ff = [[torch.randn(2, 3, n, generator=gen) for n in (4, 6)] for _ in range(3)]
    ref_d, _, _ = vocos_loss.DiscriminatorLoss()(real, fake)
    ref_g, _ = vocos_loss.GeneratorLoss()(fake)
    torch.testing.assert_close(hinge_discriminator_loss(real, fake).total, ref_d[0])
    torch.testing.assert_close(hinge_generator_loss(fake).total, ref_g[0])
    torch.testing.assert_close(feature_matching_loss(fr, ff), vocos_loss.FeatureMatchingLoss()(fr, ff)[0])


# -------------------------------------------------------------------------------------- semantic, quantizer
def test_semantic_distillation_is_higgs_mse():
    gen = torch.Generator().manual_seed(16)
    teacher = torch.randn(2, 9, 768, generator=gen)  # get_regress_target: [B, T, D]
    predicted = torch.randn(2, 768, 9, generator=gen, requires_grad=True)  # decoder_semantic: [B, D, T]
    target = teacher.transpose(1, 2).requires_grad_()
    loss = semantic_distillation_loss(predicted, target)
    torch.testing.assert_close(loss, F.mse_loss(teacher.transpose(1, 2), predicted))
    loss.backward()
    assert target.grad is None and predicted.grad is not None
    assert semantic_distillation_loss(target, target).item() == 0.0
    with pytest.raises(ValueError, match="transpose the teacher"):
        semantic_distillation_loss(predicted, teacher)


def test_cosine_distance_option():
    gen = torch.Generator().manual_seed(17)
    a, b = torch.randn(2, 8, 5, generator=gen), torch.randn(2, 8, 5, generator=gen)
    want = (1 - (a / a.norm(dim=1, keepdim=True) * b / b.norm(dim=1, keepdim=True)).sum(1)).mean()
    torch.testing.assert_close(cosine_distance_loss(a, b), want)
    assert float(cosine_distance_loss(a, 3 * a)) == pytest.approx(0.0, abs=1e-6)


def test_commitment_and_codebook_losses_come_from_straight_through():
    from tokenwave.quantization import training

    assert straight_through is training.straight_through
    gen = torch.Generator().manual_seed(18)
    z = torch.randn(4, 6, 3, generator=gen, requires_grad=True)
    embed = torch.randn(16, 3, generator=gen, requires_grad=True)
    res = straight_through(z, embed)
    e = embed[res.codes]
    torch.testing.assert_close(res.commit_loss, F.mse_loss(z, e))
    torch.testing.assert_close(res.codebook_loss, F.mse_loss(z, e))
    res.commit_loss.backward()
    assert embed.grad is None and z.grad.abs().sum() > 0
    z.grad = None
    res.codebook_loss.backward()
    assert z.grad is None and embed.grad.abs().sum() > 0
