"""A padded batch gives every item exactly what it gets alone (issue: padding must not leak)."""

from __future__ import annotations

import pytest
import torch

# Some under 1 s, none a multiple of 960, a mix of lengths that take and skip the re-padding branch.
LENGTHS = [5_001, 24_001, 88_801, 13_337, 700, 47_999]
SHORT_LENGTHS = [12_345, 30_001, 2_399, 52_799]


def _items(lengths, seed):
    gen = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=gen) for n in lengths]


def _agreement(model, items, alignment):
    batch = model.encode(items, alignment=alignment)
    same = total = 0
    for i, x in enumerate(items):
        alone = model.encode(x, alignment=alignment)
        assert int(batch.lengths[i]) == alone.codes.shape[-1] == model.num_frames(x.shape[0])
        mine = batch.codes[i, :, : batch.lengths[i]]
        same += int((mine == alone.codes[0]).sum())
        total += mine.numel()
        assert (batch.codes[i, :, batch.lengths[i]:] == 0).all()  # padding frames are zero-filled
    return batch, same / total


def _decode_matches(model, batch):
    dec = model.decode(batch)
    for i in range(batch.codes.shape[0]):
        n = int(batch.lengths[i])
        alone = model.decode(batch.codes[i : i + 1, :, :n]).audio[0]
        assert int(dec.lengths[i]) == alone.shape[-1] == n * model.hop_length
        got = dec.audio[i, :, : dec.lengths[i]]
        assert (got - alone).abs().max() <= 1e-5 * alone.abs().max()
        assert (dec.audio[i, :, dec.lengths[i]:] == 0).all()


@pytest.mark.parametrize("alignment", ["original", "transformers"])
def test_tiny_batch_equals_single_items(tiny_model, alignment):
    batch, agreement = _agreement(tiny_model, _items(LENGTHS, 0), alignment)
    # Float summation order may differ between batch and single item; a near-tie could then flip one
    # code. The issue allows >= 99.9 %; on these inputs we measure exact agreement.
    assert agreement >= 0.999, agreement
    _decode_matches(tiny_model, batch)


@pytest.mark.parametrize("alignment", ["original", "transformers"])
def test_published_geometry_batch_equals_single_items(published_pair, alignment):
    _, model = published_pair
    batch, agreement = _agreement(model, _items(SHORT_LENGTHS, 1), alignment)
    assert agreement >= 0.999, agreement
    _decode_matches(model, batch)


def test_tensor_with_lengths_equals_list(tiny_model):
    items = _items([3_000, 9_999, 1_234], 2)
    x = torch.zeros(3, 1, 9_999)
    for i, a in enumerate(items):
        x[i, 0, : a.shape[0]] = a
    x[0, 0, 3_000:] = 1e3  # garbage past an item's end must not matter
    a = tiny_model.encode(x, lengths=[3_000, 9_999, 1_234])
    b = tiny_model.encode(items)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.lengths, b.lengths)
    assert a.audio_lengths.tolist() == [3_000, 9_999, 1_234]


def test_equal_length_batch_equals_single_items(tiny_model):
    x = 0.1 * torch.randn(3, 1, 30_001, generator=torch.Generator().manual_seed(3))
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
