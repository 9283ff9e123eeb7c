"""Code-length arithmetic (spec section 6) and the tokenizer contract's numbers."""

from __future__ import annotations

import pytest
import torch

from tokenwave.api import AudioTokenizer
from tokenwave.codecs.higgs import HiggsAudioTokenizer, HiggsConfig
from tokenwave.codecs.higgs.model import code_length


@pytest.fixture(scope="module")
def published_meta():
    with torch.device("meta"):
        return HiggsAudioTokenizer(HiggsConfig())


@pytest.mark.parametrize("alignment", ["original", "transformers"])
def test_frames_closed_form_for_every_length(published_meta, alignment):
    """T = floor((L + 841) / 960) for every L in [120, 96000), from the branch arithmetic of both rules."""
    m = published_meta
    lengths = torch.arange(120, 96_000)
    sem = m._semantic_frames(lengths)
    pads = m._acoustic_padding(lengths, sem, alignment)
    acoustic = m.acoustic_encoder.output_length(lengths + 2 * pads)
    assert torch.equal(acoustic, sem)  # the re-padded acoustic branch always lines up: nothing is trimmed
    want = torch.div(lengths + 841, 960, rounding_mode="floor")
    assert torch.equal(sem, want)
    # about half of all lengths take the re-padding branch (spec: ~53 %)
    assert 0.4 < float((pads > 0).float().mean()) < 0.6


def test_num_frames_matches_encode(tiny_model):
    for n in (120, 631, 632, 959, 960, 961, 1080, 24_000, 88_800):
        enc = tiny_model.encode(torch.zeros(n) + 0.01)
        assert enc.codes.shape[-1] == tiny_model.num_frames(n) == code_length(n), n
        assert tiny_model.decode(enc).audio.shape[-1] == 960 * code_length(n)


def test_contract_properties(published_meta):
    m = published_meta
    assert isinstance(m, AudioTokenizer)
    assert (m.sample_rate, m.frame_rate, m.hop_length, m.num_codebooks, m.codebook_size) == (24000, 25, 960, 8, 1024)
    assert [m.config.num_codebooks_for_bandwidth(b) for b in (0.5, 1, 1.5, 2, None)] == [2, 4, 6, 8, 8]


def test_codebook_count_and_bandwidth(tiny_model):
    x = 0.1 * torch.randn(24_000, generator=torch.Generator().manual_seed(0))
    full = tiny_model.encode(x).codes
    for bw, k in ((0.5, 2), (1, 4), (1.5, 6), (2, 8)):
        assert torch.equal(tiny_model.encode(x, bandwidth=bw).codes, full[:, :k])
    for k in range(1, 9):
        assert torch.equal(tiny_model.encode(x, num_codebooks=k).codes, full[:, :k])
        assert tiny_model.decode(full[:, :k]).audio.shape == (1, 1, 24_000)


def test_published_parameter_count(published_meta):
    """Spec 1: 200 343 777 parameters + 1 056 776 buffer elements in the transformers layout."""
    m = published_meta
    assert sum(p.numel() for p in m.parameters()) == 200_343_777
    assert sum(b.numel() for b in m.buffers()) == 1_056_776
    assert len(m.state_dict()) == 527
