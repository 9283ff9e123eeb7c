"""Training losses as plain functions of tensors (small modules only where a window or filterbank is cached).

* reconstruction: :class:`MultiScaleMelLoss` (:func:`dac_mel_loss`, :func:`wavtokenizer_mel_loss`),
  :class:`MultiResolutionSTFTLoss` (Parallel WaveGAN);
* adversarial: hinge and least-squares losses for D and G, :func:`feature_matching_loss`;
* quantizer: commitment ``mse(z, e.detach())`` and codebook ``mse(z.detach(), e)`` losses come with the
  straight-through assignment, :func:`straight_through` (re-exported from :mod:`tokenwave.quantization.training`,
  fields ``commit_loss`` and ``codebook_loss``); the EMA trainers return ``commit_loss`` too;
* :func:`semantic_distillation_loss` (Higgs ``semantic_recon_loss``).
"""

from ..quantization.training import STEResult, straight_through
from .adversarial import (
    ADVERSARIAL_LOSSES,
    DiscriminatorLoss,
    GeneratorLoss,
    adversarial_losses,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    least_squares_discriminator_loss,
    least_squares_generator_loss,
)
from .mel import (
    MelSpectrogram,
    MultiScaleMelLoss,
    dac_mel_loss,
    hz_to_mel,
    log_mel_distance,
    mel_filterbank,
    mel_spectrogram,
    mel_to_hz,
    wavtokenizer_mel_loss,
)
from .semantic import cosine_distance_loss, semantic_distillation_loss
from .spectral import make_window, stft
from .stft_loss import (
    MultiResolutionSTFTLoss,
    STFTLoss,
    log_magnitude_loss,
    spectral_convergence_loss,
    stft_magnitude,
)

__all__ = [
    "ADVERSARIAL_LOSSES", "DiscriminatorLoss", "GeneratorLoss", "MelSpectrogram", "MultiResolutionSTFTLoss",
    "MultiScaleMelLoss", "STEResult", "STFTLoss", "adversarial_losses", "cosine_distance_loss", "dac_mel_loss",
    "feature_matching_loss", "hinge_discriminator_loss", "hinge_generator_loss", "hz_to_mel",
    "least_squares_discriminator_loss", "least_squares_generator_loss", "log_magnitude_loss", "log_mel_distance",
    "make_window", "mel_filterbank", "mel_spectrogram", "mel_to_hz", "semantic_distillation_loss",
    "spectral_convergence_loss", "stft", "stft_magnitude", "straight_through", "wavtokenizer_mel_loss",
]
