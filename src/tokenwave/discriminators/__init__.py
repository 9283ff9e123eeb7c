"""GAN discriminators for codec training, selectable by name (:func:`build_discriminator`) and combined by
:class:`MultiDiscriminator`. Every sub-discriminator returns a :class:`DiscriminatorOutput` (logits and
feature maps) and treats each batch item on its own."""

from .common import DiscriminatorOutput, from_reference_key, load_reference_state_dict
from .complex_stft import (
    BANDS,
    WINDOW_LENGTHS,
    BandSTFTDiscriminator,
    DACDiscriminator,
    MultiBandSTFTDiscriminator,
    normalize_audio,
)
from .multi import DISCRIMINATORS, MultiDiscriminator, MultiDiscriminatorOutput, build_discriminator
from .period import PERIODS, MultiPeriodDiscriminator, PeriodDiscriminator
from .resolution import RESOLUTIONS, MultiResolutionDiscriminator, ResolutionDiscriminator

__all__ = [
    "BANDS", "DISCRIMINATORS", "PERIODS", "RESOLUTIONS", "WINDOW_LENGTHS", "BandSTFTDiscriminator",
    "DACDiscriminator", "DiscriminatorOutput", "MultiBandSTFTDiscriminator", "MultiDiscriminator",
    "MultiDiscriminatorOutput", "MultiPeriodDiscriminator", "MultiResolutionDiscriminator", "PeriodDiscriminator",
    "ResolutionDiscriminator", "build_discriminator", "from_reference_key", "load_reference_state_dict",
    "normalize_audio",
]
