"""A padded batch gives every item exactly what it gets alone (issue: padding must not leak)."""

from __future__ import annotations

import contextlib

import pytest
import torch

# Some under 1 s, none a multiple of 960, a mix of lengths that take and skip the re-padding branch.
LENGTHS = [5_001, 24_001, 88_801, 13_337, 700, 47_999]
SHORT_LENGTHS = [12_345, 30_001, 2_399, 52_799]


def _items(lengths, seed):
    gen = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=gen) for n in lengths]


@contextlib.contextmanager
def batching(model, mode):
    before, model.batching = model.batching, mode
    try:
        yield model
    finally:
        model.batching = before


# A code may flip between a padded batch and the item alone only where the item's own encoding chose it by a
# relative distance gap this small (EuclideanCodebook.encode_with_margin; float summation-order noise is ~1e-7).
TIE_BOUND = 1e-4


def _stage_margins(model, x, alignment):
    """Each RVQ stage's margin ``[K, T]`` of ``x`` encoded alone (the path of ``model.encode(x)``)."""
    audio, _ = model._prepare_audio(x, None)
    embeddings, _ = model._embed(audio, None, alignment)
    return model.quantizer.encode_with_margin(embeddings)[1][0]


def _agreement(model, items, alignment):
    """(batch, share of codes equal to the items' own, flips not explained by a near-tie). In a frame where the
    codes differ, the first differing stage got the same residual up to float noise (the stages before it
    agree), so a flip there is explained only by a near-tie of the item's own encoding at that stage; later
    stages then quantize another residual and may differ freely."""
    batch = model.encode(items, alignment=alignment)
    same = total = 0
    unexplained = []
    for i, x in enumerate(items):
        alone = model.encode(x, alignment=alignment)
        assert int(batch.lengths[i]) == alone.codes.shape[-1] == model.num_frames(x.shape[0])
        mine = batch.codes[i, :, : batch.lengths[i]]
        same += int((mine == alone.codes[0]).sum())
        total += mine.numel()
        assert (batch.codes[i, :, batch.lengths[i]:] == 0).all()  # padding frames are zero-filled
        differ = mine != alone.codes[0]
        if differ.any():
            margins = _stage_margins(model, x, alignment)
            for t in differ.any(dim=0).nonzero().flatten().tolist():
                stage = int(differ[:, t].nonzero()[0])
                if float(margins[stage, t]) >= TIE_BOUND:
                    unexplained.append((i, t, stage, float(margins[stage, t])))
    return batch, same / total, unexplained


def _decode_error(model, batch):
    """Largest |batch decode - decode alone| / peak over the items."""
    dec = model.decode(batch)
    worst = 0.0
    for i in range(batch.codes.shape[0]):
        n = int(batch.lengths[i])
        alone = model.decode(batch.codes[i : i + 1, :, :n]).audio[0]
        assert int(dec.lengths[i]) == alone.shape[-1] == n * model.hop_length
        got = dec.audio[i, :, : dec.lengths[i]]
        worst = max(worst, float((got - alone).abs().max() / alone.abs().max()))
        assert (dec.audio[i, :, dec.lengths[i]:] == 0).all()
    return worst


def _check_batch_equals_single_items(model, items, alignment, mode):
    with batching(model, mode):
        batch, agreement, unexplained = _agreement(model, items, alignment)
        err = _decode_error(model, batch)
    assert not unexplained, f"codes differ from the items' own away from a near-tie: {unexplained}"
    assert agreement >= 0.99, agreement
    assert err <= 1e-5
    if mode == "per_item":
        assert agreement == 1.0 and err == 0.0


# "padded": one masked forward pass. The convolution library may pick another summation order for another
# tensor shape (even a batch of two identical unpadded items differs from one item in the last bits), so
# codes may flip at a near-tie (the issue allows >= 99.9 % agreement; each flip here must be at one, see
# _agreement: on the tiny model one near-tie flip, whose later stages follow it, is already 0.13 % of the
# codes, so a share alone made this test fail about one run in 20) and audio differs within float noise
# (measured: 0 flips; decode <= 7.7e-6 of peak on the published geometry with transformers-initialised
# weights). "per_item" (the CPU default): bit-identical by construction.
@pytest.mark.parametrize("mode", ["padded", "per_item"])
@pytest.mark.parametrize("alignment", ["original", "transformers"])
def test_tiny_batch_equals_single_items(tiny_model, alignment, mode):
    _check_batch_equals_single_items(tiny_model, _items(LENGTHS, 0), alignment, mode)


@pytest.mark.parametrize("mode", ["padded", "per_item"])
@pytest.mark.parametrize("alignment", ["original", "transformers"])
def test_published_geometry_batch_equals_single_items(published_pair, alignment, mode):
    _check_batch_equals_single_items(published_pair[1], _items(SHORT_LENGTHS, 1), alignment, mode)


def test_auto_batching_is_per_item_on_cpu(tiny_model):
    assert tiny_model.batching == "auto" and tiny_model._per_item(torch.zeros(2, 1, 10))
    assert not tiny_model._per_item(torch.zeros(1, 1, 10))
    with pytest.raises(ValueError, match="batching must be one of"):
        type(tiny_model)(tiny_model.config, batching="sometimes")


@pytest.mark.parametrize("mode", ["padded", "per_item"])
def test_tensor_with_lengths_equals_list(tiny_model, mode):
    items = _items([3_000, 9_999, 1_234], 2)
    x = torch.zeros(3, 1, 9_999)
    for i, a in enumerate(items):
        x[i, 0, : a.shape[0]] = a
    x[0, 0, 3_000:] = 1e3  # garbage past an item's end must not matter
    with batching(tiny_model, mode):
        a = tiny_model.encode(x, lengths=[3_000, 9_999, 1_234])
        b = tiny_model.encode(items)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.lengths, b.lengths)
    assert a.audio_lengths.tolist() == [3_000, 9_999, 1_234]


@pytest.mark.parametrize("mode", ["padded", "per_item"])
def test_equal_length_batch_equals_single_items(tiny_model, mode):
    x = 0.1 * torch.randn(3, 1, 30_001, generator=torch.Generator().manual_seed(3))
    with batching(tiny_model, mode):
        batch = tiny_model.encode(x)
    for i in range(3):
        assert torch.equal(batch.codes[i : i + 1], tiny_model.encode(x[i]).codes)


def test_unbatch_and_crop(tiny_model):
    items = _items([24_001, 5_000], 4)
    enc = tiny_model.encode(items)
    assert [c.shape[-1] for c in enc.unbatch()] == [25, 6]
    dec = tiny_model.decode(enc, crop=True)
    assert dec.lengths.tolist() == [24_000, 5_000]  # 24_001 -> 25 frames = 24_000 samples; 5_000 is cropped
    assert [a.shape[-1] for a in dec.unbatch()] == [24_000, 5_000]
