"""Codebook training: straight-through assignment, EMA, k-means init, dead codes, eval safety, 2-process gloo."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tokenwave.quantization.rvq import EuclideanCodebook, ResidualVectorQuantizer
from tokenwave.quantization.training import (
    EMACodebookTrainer,
    RVQTrainer,
    allocate_rows,
    ema_update_,
    kmeans_init_,
    nearest_code,
    replace_dead_codes_,
    sample_num_quantizers,
    smoothed_cluster_size,
    straight_through,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _codebook(K: int, d: int, seed: int = 0, inited: bool = True) -> EuclideanCodebook:
    cb = EuclideanCodebook(K, d)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        cb.embed.copy_(torch.randn(K, d, generator=gen))
        cb.cluster_size.fill_(5.0)
        cb.embed_avg.copy_(cb.embed * smoothed_cluster_size(cb.cluster_size)[:, None])
        cb.inited.fill_(float(inited))
    return cb


def _buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.named_buffers()}


def _blobs(num: int, d: int, n: int, seed: int, spread: float = 10.0, noise: float = 0.1):
    """``n`` points around ``num`` random centres with unequal populations -> (points, true centres, labels)."""
    gen = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(num, d, generator=gen)
    weights = torch.rand(num, generator=gen) + 0.2
    labels = torch.cat([torch.arange(num), torch.multinomial(weights, n - num, replacement=True, generator=gen)])
    return centres[labels] + noise * torch.randn(n, d, generator=gen), centres, labels


def test_codes_equal_inference_encode():
    cb = _codebook(64, 8)
    z = 2 * torch.randn(3, 50, 8)
    want = cb.encode(z)
    assert torch.equal(nearest_code(z, cb.embed), want)
    assert torch.equal(straight_through(z, cb.embed).codes, want)
    assert torch.equal(EMACodebookTrainer(cb.train()).step(z).codes, want)


def test_straight_through_has_identity_jacobian_and_both_losses():
    embed = torch.nn.Parameter(torch.randn(16, 4))
    z = torch.randn(30, 4, requires_grad=True)
    out = straight_through(z, embed)
    e = embed.detach()[out.codes]
    torch.testing.assert_close(out.quantized, e)
    w = torch.randn(30, 4)
    (out.quantized * w).sum().backward()
    assert torch.equal(z.grad, w) and embed.grad is None  # the STE passes nothing to the codebook
    torch.testing.assert_close(out.commit_loss, ((z.detach() - e) ** 2).mean())
    torch.testing.assert_close(out.codebook_loss, out.commit_loss)
    z.grad = None
    out.commit_loss.backward(retain_graph=True)
    torch.testing.assert_close(z.grad, 2 * (z.detach() - e) / z.numel())
    out.codebook_loss.backward()
    assert embed.grad is not None and embed.grad.abs().sum() > 0


def test_ema_update_matches_hand_computation():
    K, d, g, eps = 8, 3, 0.9, 1e-3
    cb = _codebook(K, d)
    with torch.no_grad():
        cb.cluster_size.copy_(torch.rand(K) * 4)
        cb.embed_avg.copy_(torch.randn(K, d))
    cs0, ea0 = cb.cluster_size.double(), cb.embed_avg.double()
    z, codes = torch.randn(20, d), torch.randint(0, K - 2, (20,))  # the last two rows get nothing
    onehot = torch.nn.functional.one_hot(codes, K).double()
    cs = g * cs0 + (1 - g) * onehot.sum(0)
    ea = g * ea0 + (1 - g) * onehot.t() @ z.double()
    embed = ea / ((cs + eps) / (cs.sum() + K * eps) * cs.sum())[:, None]
    counts = ema_update_(cb, z, codes, decay=g, eps=eps)
    assert torch.equal(counts, onehot.sum(0).float())
    torch.testing.assert_close(cb.cluster_size.double(), cs)
    torch.testing.assert_close(cb.embed_avg.double(), ea)
    torch.testing.assert_close(cb.embed.double(), embed)


def test_ema_step_equals_encodec_0_1_1_without_expiry():
    core_vq = pytest.importorskip("encodec.quantization.core_vq")
    ref = core_vq.EuclideanCodebook(dim=8, codebook_size=32, kmeans_init=False, threshold_ema_dead_code=0).train()
    ours = _codebook(32, 8, seed=3)
    ref.load_state_dict(ours.state_dict())
    for step in range(3):
        z = torch.randn(2, 40, 8) + step
        want_q, want_codes = ref(z)
        ste = straight_through(z, ours.embed)
        ema_update_(ours, z, ste.codes)
        assert torch.equal(ste.codes, want_codes)
        torch.testing.assert_close(ste.quantized, want_q)
        for k, v in ref.state_dict().items():
            torch.testing.assert_close(ours.get_buffer(k), v, rtol=1e-6, atol=1e-6)


def test_kmeans_init_lowers_quantization_error_and_sets_consistent_buffers():
    x, _, _ = _blobs(16, 4, 800, seed=1, spread=3.0, noise=0.5)
    err = {}
    for iters in (0, 20):  # same seed: same initial centres, then Lloyd's iterations only lower the error
        cb = _codebook(16, 4, inited=False)
        kmeans_init_(cb, x, iters=iters, generator=torch.Generator().manual_seed(0))
        err[iters] = ((x - cb.decode(cb.encode(x))) ** 2).mean()
    assert err[20] < 0.7 * err[0]
    assert cb.inited.item() == 1 and cb.cluster_size.sum() == 800
    torch.testing.assert_close(cb.embed, cb.embed_avg / smoothed_cluster_size(cb.cluster_size)[:, None])


def test_allocate_rows_is_proportional_with_one_row_each():
    counts = torch.tensor([0, 1, 10, 89, 0, 300])
    rows = allocate_rows(counts, 40)
    share = counts.double() * (40 - 6) / counts.sum()
    assert rows.sum() == 40 and (rows >= 1).all() and (rows[counts == 0] == 1).all()
    assert ((rows - 1 - share).abs() < 1).all()
    with pytest.raises(ValueError):
        allocate_rows(counts, 5)


def test_kmeans_200_clusters_into_4096_rows_represents_every_cluster():
    x, centres, _ = _blobs(200, 8, 4000, seed=2)
    cb = _codebook(4096, 8, inited=False)
    result = kmeans_init_(cb, x, num_clusters=200, iters=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(cb.embed[:200], result.centres)
    rows_per_cluster = allocate_rows(result.counts, 4096)
    # every extra row is a data vector of the cluster it was allotted to
    owner = torch.repeat_interleave(torch.arange(200), rows_per_cluster - 1)
    extra = cb.embed[200:]
    data_row = (extra[:, None, :] == x[None]).all(-1)
    assert (data_row.sum(1) >= 1).all()
    assert torch.equal(result.assignments[data_row.float().argmax(1)], owner)
    # every true blob is represented (even where k-means merged two blobs into one cluster)
    assert (torch.bincount(torch.cdist(cb.embed, centres).argmin(1), minlength=200) >= 1).all()
    torch.testing.assert_close(cb.cluster_size.sum(), torch.tensor(4000.0))
    torch.testing.assert_close(cb.cluster_size[:200], result.counts / rows_per_cluster.float())


def test_kmeans_init_is_seed_reproducible():
    x = torch.randn(300, 4)
    runs = []
    for seed in (0, 0, 1):
        cb = _codebook(32, 4, inited=False)
        kmeans_init_(cb, x, num_clusters=8, iters=5, max_samples=250, generator=torch.Generator().manual_seed(seed))
        runs.append(_buffers(cb))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.equal(runs[0]["embed"], runs[2]["embed"])


def test_eval_and_no_grad_never_touch_buffers_nor_run_kmeans():
    z = torch.randn(4, 20, 8)
    for inited in (False, True):
        cb = _codebook(64, 8, inited=inited)
        with torch.no_grad():
            cb.cluster_size.zero_()  # every code dead: training would replace all of them
        trainer = EMACodebookTrainer(cb, kmeans_iters=3)
        before = _buffers(cb)
        cb.eval()
        out = trainer.step(z)
        assert torch.equal(out.quantized, cb.decode(out.codes))  # the rows themselves, no STE rounding
        cb.train()
        with torch.no_grad():
            trainer.step(z)
        with torch.inference_mode():
            trainer.step(z)
        assert all(torch.equal(before[k], v) for k, v in cb.named_buffers())
        trainer.step(z)  # training mode with grad: the buffers do change
        assert not torch.equal(before["embed"], cb.embed) and cb.inited.item() == 1


def _wavtokenizer_order_step(cb: EuclideanCodebook, z: torch.Tensor, gen: torch.Generator):
    """EnCodec 0.1.1 as used by WavTokenizer: re-sample dead rows of ``embed`` *before* the EMA update."""
    dead = (cb.cluster_size < 2).nonzero().squeeze(1)
    with torch.no_grad():
        cb.embed[dead] = z[torch.randint(z.shape[0], (dead.numel(),), generator=gen)]
        resampled = cb.embed[dead].clone()
    ema_update_(cb, z, cb.encode(z))
    return dead, resampled


def test_dead_codes_are_replaced_and_persist_issue_89():
    """The demonstration of dead_code_check.py (K=64, d=8, shifted data), with our order of operations."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cb = _codebook(64, 8, inited=False).train()
    old = _codebook(64, 8, inited=False).train()
    for c in (cb, old):
        kmeans_init_(c, torch.randn(200, 8), iters=10, generator=torch.Generator().manual_seed(0))
        warm = torch.randn(200, 8)
        ema_update_(c, warm, c.encode(warm))
    replaced_total = 0
    for _ in range(5):
        z = torch.randn(200, 8) * 3 + 5
        ema_update_(cb, z, straight_through(z, cb.embed).codes)
        dead = replace_dead_codes_(cb, z, threshold=2, generator=gen)
        replaced_total += dead.numel()
        assert (cb.embed[dead][:, None, :] == z[None]).all(-1).any(1).all()  # rows are batch vectors
        assert (cb.cluster_size >= 2).all()
        renorm = cb.embed_avg / smoothed_cluster_size(cb.cluster_size)[:, None]
        torch.testing.assert_close(renorm, cb.embed, rtol=1e-6, atol=1e-6)  # normalisation keeps them
        idle = copy.deepcopy(cb)  # a next step that assigns nothing only decays cs and embed_avg together
        ema_update_(idle, z[:0], torch.zeros(0, dtype=torch.long))
        torch.testing.assert_close(idle.embed[dead], cb.embed[dead], rtol=1e-4, atol=1e-4)
        # the original order loses its replacement in the same call
        gone, vectors = _wavtokenizer_order_step(old, z, gen)
        assert gone.numel() > 0 and not torch.isclose(old.embed[gone], vectors).all(-1).any()
    assert replaced_total > 0


def test_trainer_step_reports_usage_and_replacements():
    cb = _codebook(32, 4, inited=False).train()
    trainer = EMACodebookTrainer(cb, kmeans_iters=5, generator=torch.Generator().manual_seed(0))
    out = trainer.step(torch.randn(2, 40, 4))
    assert out.quantized.shape == (2, 40, 4) and out.codes.shape == (2, 40)
    counts = torch.bincount(out.codes.flatten(), minlength=32).float()
    p = counts[counts > 0] / 80
    torch.testing.assert_close(out.stats["perplexity"], (-(p * p.log()).sum()).exp())
    assert out.stats["codes_used"] == (counts > 0).float().mean()
    assert out.stats["codes_replaced"] > 0  # 80 vectors cannot keep 32 codes above 2 after one 1% EMA step


def test_sample_num_quantizers_is_seedable_and_in_choices():
    draws = [[sample_num_quantizers([2, 4, 8], generator=torch.Generator().manual_seed(s)) for s in range(20)]
             for _ in range(2)]
    assert draws[0] == draws[1] and set(draws[0]) == {2, 4, 8}


def test_rvq_training_step():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=16, num_quantizers=3, codebook_size=32, codebook_dim=4)
    for q in rvq.quantizers:
        q.codebook.inited.zero_()
    trainer = RVQTrainer(rvq.train(), kmeans_iters=5, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 16, 30, requires_grad=True)
    before = _buffers(rvq.quantizers[2])
    out = trainer.step(x, num_quantizers=2)
    assert out.quantized.shape == (2, 16, 30) and out.codes.shape == (2, 2, 30)
    assert set(out.stats) == {f"q{i}/{k}" for i in range(2) for k in ("perplexity", "codes_used", "codes_replaced")}
    (out.quantized.pow(2).mean() + out.commit_loss).backward()
    assert x.grad is not None and rvq.quantizers[1].project_in.weight.grad is not None
    assert rvq.quantizers[0].project_out.weight.grad is not None
    assert all(torch.equal(before[k], v) for k, v in rvq.quantizers[2].named_buffers())  # stage 2 not active
    rvq.eval()
    with torch.no_grad():
        ev = trainer.step(x)
    assert torch.equal(ev.codes, rvq.encode(x))
    torch.testing.assert_close(ev.quantized, rvq.decode(ev.codes))


# ---------------------------------------------------------------------------------------- two processes (gloo)

SPLIT = (70, 130)  # unequal shards: rank 0 gets the first 70 rows of every batch


def _batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    first = _blobs(12, 4, sum(SPLIT), seed=3, spread=3.0, noise=0.3)[0]
    return [first] + [torch.randn(sum(SPLIT), 4, generator=gen) * 2 + 1 for _ in range(3)]


def _train(shard: slice) -> dict[str, torch.Tensor]:
    """k-means (stratified, subsampled) + EMA + dead codes on one codebook, then two RVQ steps."""
    cb = _codebook(64, 4, inited=False).train()
    gen = torch.Generator().manual_seed(7)
    trainer = EMACodebookTrainer(cb, threshold_dead=3, kmeans_clusters=8, kmeans_iters=5, kmeans_max_samples=150,
                                 generator=gen)
    replaced = 0
    for z in _batches():
        replaced += int(trainer.step(z[shard]).stats["codes_replaced"])
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=6, num_quantizers=2, codebook_size=8, codebook_dim=3).train()
    for q in rvq.quantizers:
        q.codebook.inited.zero_()
    rvq_trainer = RVQTrainer(rvq, kmeans_iters=3, generator=gen)
    x = torch.randn(4, 6, sum(SPLIT) // 4, generator=torch.Generator().manual_seed(9))
    x = x.transpose(1, 2).reshape(-1, 6)[shard].reshape(-1, 1, 6).transpose(1, 2)  # shard the frames
    for choices in ([1, 2], [2]):
        rvq_trainer.step(x, num_quantizers=sample_num_quantizers(choices, generator=gen))
    out = {f"vq.{k}": v for k, v in cb.named_buffers()} | {f"rvq.{k}": v for k, v in rvq.named_buffers()}
    return out | {"replaced": torch.tensor(replaced)}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        shard = slice(0, SPLIT[0]) if rank == 0 else slice(SPLIT[0], None)
        torch.save(_train(shard), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_gloo_match_one_process_on_the_concatenated_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    single = _train(slice(None))
    assert single["replaced"] > 0 and single["rvq.quantizers.1.codebook.inited"].item() == 1
    for k, v in single.items():
        assert torch.equal(r0[k], r1[k]), k
        torch.testing.assert_close(r0[k], v, rtol=1e-6, atol=1e-6, msg=k)
