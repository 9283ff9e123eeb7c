"""Training the EMA codebooks of :mod:`tokenwave.quantization.rvq` (VQ-VAE-2 / EnCodec recipe).

One training step of a codebook with rows ``E`` (``EuclideanCodebook.embed``, ``[K, d]``) on frame vectors
``z [N, d]`` (van den Oord et al. 2017, App. A.1; Razavi et al. 2019; EnCodec ``core_vq.py``)::

    c      = argmax_j -(|z|^2 - 2 z.E_j + |E_j|^2)           nearest code, float32 (= EuclideanCodebook.encode)
    q      = z + (E_c - z).detach()                         straight-through: dq/dz = I
    L      = mse(z, E_c.detach())                           commitment loss (the encoder's only VQ loss)
    cs    <- g cs + (1-g) counts                            EMA cluster sizes, g = 0.99
    ea    <- g ea + (1-g) sum_{i: c_i = j} z_i              EMA sums
    E     <- ea / ((cs + eps) / (sum cs + K eps) * sum cs)   Laplace-smoothed means, eps = 1e-5
    dead   = {j : cs_j < threshold}                          after the EMA update, then replaced (below)

What this module does differently from the code it reproduces, and why:

* **Dead codes really are replaced.** WavTokenizer (EnCodec 0.1.1 code) re-samples dead rows *before* the EMA
  update and the final ``E <- ea / ...`` line overwrites every row, so the replacement never lasts
  (WavTokenizer issue #89). Higgs (xcodec ``core_vq_lsx_version.py``) replaces *after* the update but only in
  ``embed``, so the next step's normalisation overwrites it after one assignment. Here a replaced row ``j``
  gets a batch vector ``v``, ``cs_j = threshold`` and ``ea_j = v * smoothed(cs)_j``: the buffers stay a fixed
  point of the normalisation (``E == ea / smoothed(cs)`` for every row), and the row survives its next step
  iff it is assigned at least ``threshold`` vectors there.
* **k-means sets consistent buffers.** EnCodec and Higgs set ``embed_avg = embed`` next to ``cluster_size = counts``,
  so the first EMA normalisation divides each centre by its population. Here ``cluster_size`` is the
  population of each row and ``embed_avg = embed * smoothed(cluster_size)`` (same fixed point as above).
  ``num_clusters`` may be smaller than the codebook (the WavTokenizer paper's "200 cluster centres"; its code
  runs 200 *iterations* over 4096 centres): see :func:`kmeans_init_` for the stratified rule.
* **Never in inference.** Both originals run k-means inside ``forward`` whenever ``inited == 0``, even in eval
  mode. Here buffers change only when the codebook module is in training mode *and* grad is enabled
  (not under ``torch.no_grad()``/``torch.inference_mode()``). WavTokenizer's discriminator step computes the
  generator output under ``no_grad`` in training mode, which in the original is a second EMA update per
  batch; with this module it is none.
* **Distributed.** Counts and sums are all-reduced (as in Higgs; EnCodec 0.1.1 keeps per-rank EMAs and
  overwrites them with rank 0's on every expiry), so ``threshold`` applies to the *global* count per step.
  k-means runs Lloyd's iterations on the sharded batch (sums all-reduced, no gather), random choices are
  drawn on rank 0 and broadcast, so every rank ends with identical buffers, equal to a one-process run on
  the concatenated batch up to the order of float sums (~1e-7 relative). Every rank must make the same
  training calls (same stages, see :func:`sample_num_quantizers`); eval calls never communicate.
* Higgs's k-means subsamples at most 10 000 frames (``kmeans_max_samples=10_000``) and runs 50 iterations
  with ``cdist``/``argmin`` distances; ours uses the ``encode`` expression (ties may resolve differently).

Usage (WavTokenizer's single codebook; the Higgs RVQ goes through :class:`RVQTrainer`)::

    trainer = EMACodebookTrainer(model.quantizer.codebook, kmeans_iters=200, generator=gen)
    quantized, codes, commit_loss, stats = trainer.step(x.transpose(1, 2))    # x [B, D, T]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .rvq import EuclideanCodebook, ResidualVectorQuantizer

# --------------------------------------------------------------------------------------------------- distributed


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes in place (identity with one process)."""
    if _world()[1] > 1:
        dist.all_reduce(t)
    return t


def _broadcast_(t: torch.Tensor) -> torch.Tensor:
    if _world()[1] > 1:
        dist.broadcast(t, src=0)
    return t


def broadcast_codebook_(codebook: EuclideanCodebook) -> None:
    """Copy rank 0's buffers to every process (no-op without ``torch.distributed``)."""
    for buf in codebook.buffers():
        _broadcast_(buf)


def _comm_device() -> torch.device:
    if _world()[1] > 1 and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class _Rows:
    """The rows of a batch sharded over the processes, numbered globally in rank order."""

    def __init__(self, local: torch.Tensor):
        rank, world = _world()
        sizes = torch.zeros(world, dtype=torch.long, device=local.device)
        sizes[rank] = local.shape[0]
        _all_reduce_(sizes)
        self.local = local
        self.offset = int(sizes[:rank].sum())
        self.total = int(sizes.sum())

    def _mine(self, idx: torch.Tensor) -> torch.Tensor:
        return (idx >= self.offset) & (idx < self.offset + self.local.shape[0])

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows at global indices ``idx`` (identical on all ranks) -> ``[len(idx), d]`` on every rank.
        Each row is owned by one rank and the others add zeros, so the all-reduce is exact."""
        rows = self.local.new_zeros(idx.shape[0], self.local.shape[1])
        mine = self._mine(idx)
        rows[mine] = self.local[idx[mine] - self.offset]
        return _all_reduce_(rows)

    def subset(self, idx: torch.Tensor) -> _Rows:
        """The rows at sorted global indices ``idx``, still sharded (rank order is preserved)."""
        return _Rows(self.local[idx[self._mine(idx)] - self.offset])

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Per-row ``values [n]`` of every rank -> ``[total]`` on every rank."""
        out = values.new_zeros(self.total)
        out[self.offset : self.offset + values.shape[0]] = values
        return _all_reduce_(out)


def _choose(num: int, total: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``num`` indices into ``range(total)`` drawn on rank 0 and broadcast: distinct when ``total >= num``
    (randperm), else with replacement (EnCodec's ``sample_vectors``)."""
    idx = torch.empty(num, dtype=torch.long, device=device)
    if _world()[0] == 0:
        gen_device = generator.device if generator is not None else "cpu"
        if total >= num:
            drawn = torch.randperm(total, generator=generator, device=gen_device)[:num]
        else:
            drawn = torch.randint(total, (num,), generator=generator, device=gen_device)
        idx.copy_(drawn)
    return _broadcast_(idx)


# ------------------------------------------------------------------------------------------------ plain functions


def nearest_code(z: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """``z [..., d]`` -> nearest row of ``embed [K, d]``, ``[...]``; the expression of ``EuclideanCodebook.encode``
    (float32), so the codes are bit-identical to inference."""
    flat = z.reshape(-1, z.shape[-1]).float()
    e = embed.float().t()
    dist_ = -(flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e + e.pow(2).sum(0, keepdim=True))
    return dist_.max(dim=-1).indices.view(z.shape[:-1])


def _nearest_chunked(x: torch.Tensor, centres: torch.Tensor, budget: int = 1 << 24) -> torch.Tensor:
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    step = max(1, budget // centres.shape[0])
    return torch.cat([nearest_code(x[i : i + step], centres) for i in range(0, x.shape[0], step)])


class STEResult(NamedTuple):
    quantized: torch.Tensor  # [..., d] z + (e - z).detach(), dtype of z
    codes: torch.Tensor  # [...] int64
    commit_loss: torch.Tensor  # mse(z, e.detach()), float32 scalar: trains the encoder
    codebook_loss: torch.Tensor  # mse(z.detach(), e): trains ``embed`` when it is a Parameter (non-EMA VQ)


def straight_through(z: torch.Tensor, embed: torch.Tensor) -> STEResult:
    """Nearest-code quantization with the straight-through estimator (identity Jacobian ``dq/dz``)."""
    with torch.no_grad():
        codes = nearest_code(z, embed)
    e = F.embedding(codes, embed)
    quantized = z + (e.to(z.dtype) - z).detach()
    commit = F.mse_loss(z.float(), e.detach().float())
    codebook = F.mse_loss(z.detach().float(), e.float())
    return STEResult(quantized, codes, commit, codebook)


def smoothed_cluster_size(cluster_size: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Laplace smoothing ``(cs + eps) / (sum cs + K eps) * sum cs``: no division by zero for unused rows."""
    n = cluster_size.sum()
    return (cluster_size + eps) / (n + cluster_size.numel() * eps) * n


@torch.no_grad()
def ema_update_(
    codebook: EuclideanCodebook, z: torch.Tensor, codes: torch.Tensor, *, decay: float = 0.99, eps: float = 1e-5
) -> torch.Tensor:
    """One EMA update of ``cluster_size``, ``embed_avg`` and ``embed`` from ``z [..., d]`` assigned to
    ``codes [...]`` (counts and sums all-reduced). Returns the global counts ``[K]`` (float32)."""
    flat = z.detach().reshape(-1, z.shape[-1]).float()
    codes = codes.reshape(-1)
    counts = torch.bincount(codes, minlength=codebook.codebook_size).float()
    sums = flat.new_zeros(codebook.codebook_size, flat.shape[1]).index_add_(0, codes, flat)
    _all_reduce_(counts)
    _all_reduce_(sums)
    cs, ea = codebook.cluster_size.float(), codebook.embed_avg.float()  # the buffers themselves when float32
    cs.mul_(decay).add_(counts, alpha=1 - decay)
    ea.mul_(decay).add_(sums, alpha=1 - decay)
    codebook.cluster_size.copy_(cs)
    codebook.embed_avg.copy_(ea)
    codebook.embed.copy_(ea / smoothed_cluster_size(cs, eps)[:, None])
    return counts


@torch.no_grad()
def _set_rows_(codebook: EuclideanCodebook, rows: torch.Tensor | slice, vectors: torch.Tensor,
               sizes: torch.Tensor, eps: float) -> None:
    """Make ``embed[rows] = vectors`` with ``cluster_size[rows] = sizes``, keeping ``embed_avg`` such that
    ``embed == embed_avg / smoothed(cluster_size)`` for every row (a fixed point of the EMA normalisation)."""
    cs = codebook.cluster_size.float().clone()
    cs[rows] = sizes.float()
    smooth = smoothed_cluster_size(cs, eps)
    ea = codebook.embed_avg.float().clone()
    ea[rows] = vectors.float() * smooth[rows, None]
    codebook.cluster_size.copy_(cs)
    codebook.embed_avg.copy_(ea)
    codebook.embed.copy_(ea / smooth[:, None])  # every row: the total sum of cs changed
    codebook.embed[rows] = vectors.to(codebook.embed.dtype)  # exact, not a rounding of (v * s) / s


@torch.no_grad()
def replace_dead_codes_(
    codebook: EuclideanCodebook, z: torch.Tensor, *, threshold: float = 2.0, eps: float = 1e-5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Replace the rows with ``cluster_size < threshold`` by random vectors of the batch ``z [..., d]`` (all
    ranks' rows, distinct when the batch is large enough; indices drawn on rank 0). Call it after
    :func:`ema_update_`. The replaced rows get ``cluster_size = threshold`` and a consistent ``embed_avg``
    (see :func:`_set_rows_`), so they persist through the next normalisation. Returns their indices."""
    if threshold <= 0:
        return torch.zeros(0, dtype=torch.long, device=codebook.embed.device)
    dead = (codebook.cluster_size < threshold).nonzero().squeeze(1)  # identical on all ranks
    if dead.numel() == 0:
        return dead
    rows = _Rows(z.detach().reshape(-1, z.shape[-1]).float())
    vectors = rows.take(_choose(dead.numel(), rows.total, generator, rows.local.device))
    _set_rows_(codebook, dead, vectors, torch.full_like(vectors[:, 0], float(threshold)), eps)
    return dead


# ------------------------------------------------------------------------------------------------------- k-means


class KMeansResult(NamedTuple):
    centres: torch.Tensor  # [C, d] float32, identical on all ranks
    counts: torch.Tensor  # [C] int64, global population of each returned centre
    assignments: torch.Tensor  # [n] int64, nearest returned centre of each local row


def kmeans(samples: torch.Tensor, num_clusters: int, *, iters: int = 50,
           generator: torch.Generator | None = None) -> KMeansResult:
    """Lloyd's k-means on ``samples [n, d]`` (this rank's shard of the batch; sums all-reduced).

    Initial centres are distinct random samples (with replacement when there are fewer samples than
    clusters); an empty cluster keeps its previous centre. ``counts``/``assignments`` describe the returned
    centres (one more assignment pass than EnCodec, whose counts belong to the previous centres)."""
    rows = _Rows(samples.detach().float())
    centres = rows.take(_choose(num_clusters, rows.total, generator, rows.local.device))
    for it in range(iters + 1):
        assign = _nearest_chunked(rows.local, centres)
        counts = _all_reduce_(torch.bincount(assign, minlength=num_clusters))
        if it == iters:
            break
        sums = _all_reduce_(centres.new_zeros(centres.shape).index_add_(0, assign, rows.local))
        means = sums / counts.clamp(min=1)[:, None].to(sums.dtype)
        centres = torch.where(counts[:, None] > 0, means, centres)
    return KMeansResult(centres, counts, assign)


def allocate_rows(counts: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Rows per cluster: one each, the other ``num_rows - C`` in proportion to ``counts [C]`` (largest
    remainder, so ``|rows_c - 1 - share_c| < 1`` and empty clusters get exactly one). Returns ``[C]`` int64."""
    counts = counts.detach().cpu().double()
    extra = num_rows - counts.numel()
    if extra < 0:
        raise ValueError(f"{counts.numel()} clusters do not fit in {num_rows} rows")
    quota = counts * extra / counts.sum()
    rows = quota.floor().long()
    left = extra - int(rows.sum())
    rows[torch.topk(quota - rows, left).indices] += 1
    return rows + 1


@torch.no_grad()
def kmeans_init_(
    codebook: EuclideanCodebook, z: torch.Tensor, *, num_clusters: int | None = None, iters: int = 50,
    max_samples: int | None = None, eps: float = 1e-5, generator: torch.Generator | None = None,
) -> KMeansResult:
    """Initialise ``codebook`` from k-means on the batch ``z [..., d]`` (all ranks' rows) and set ``inited = 1``.

    * ``num_clusters = K`` (default, EnCodec/WavTokenizer/Higgs): the rows are the centres, ``cluster_size``
      their populations.
    * ``num_clusters = C < K`` (stratified): rows ``0..C-1`` are the centres; the other ``K - C`` rows are
      data vectors sampled without replacement from the k-means clusters, cluster ``c`` receiving
      ``rows_c - 1`` of them with ``rows_c`` from :func:`allocate_rows` (at least one row per cluster, the rest
      proportional to its population; with replacement only when a cluster is smaller than its share).
      Extra rows are grouped by cluster, in cluster order. Each of cluster ``c``'s rows gets
      ``cluster_size = counts_c / rows_c`` (so ``sum cluster_size`` is the number of samples either way).

    ``embed_avg = embed * smoothed(cluster_size)`` (see the module docstring). ``max_samples`` first draws at
    most that many rows of the batch (Higgs: 10 000). Random draws happen on rank 0 from ``generator`` and
    the resulting buffers are broadcast from rank 0.
    """
    K = codebook.codebook_size
    C = K if num_clusters is None else num_clusters
    rows = _Rows(z.detach().reshape(-1, z.shape[-1]).float())
    if rows.total == 0:
        raise ValueError("k-means needs at least one vector")
    if max_samples is not None and rows.total > max_samples:
        rows = rows.subset(_choose(max_samples, rows.total, generator, rows.local.device).sort().values)
    result = kmeans(rows.local, C, iters=iters, generator=generator)
    if C == K:
        embed, sizes = result.centres, result.counts.float()
    else:
        per_cluster = allocate_rows(result.counts, K).to(result.counts.device)
        owner = torch.repeat_interleave(torch.arange(C, device=per_cluster.device), per_cluster - 1)
        extra = rows.take(_stratified_sample(rows, result, per_cluster, owner, generator))
        embed = torch.cat([result.centres, extra])
        share = result.counts.float() / per_cluster.float()
        sizes = torch.cat([share, share[owner]])
    _set_rows_(codebook, slice(None), embed, sizes, eps)
    codebook.inited.fill_(1)
    broadcast_codebook_(codebook)
    return result


def _stratified_sample(rows: _Rows, result: KMeansResult, per_cluster: torch.Tensor, owner: torch.Tensor,
                       generator: torch.Generator | None) -> torch.Tensor:
    """Global indices of ``per_cluster - 1`` random members of each cluster (drawn on rank 0, broadcast)."""
    assign = rows.gather(result.assignments)  # every rank's, so rank 0 can draw among all members
    idx = torch.empty(owner.shape[0], dtype=torch.long, device=rows.local.device)
    if _world()[0] == 0:
        assign, counts, owner = assign.cpu(), result.counts.cpu(), owner.cpu()
        keys = torch.rand(rows.total, generator=generator, device=generator.device if generator is not None else "cpu")
        shuffled = torch.argsort(keys.cpu())
        order = shuffled[torch.argsort(assign[shuffled], stable=True)]  # by cluster, random within
        start = torch.cumsum(counts, 0) - counts
        first = torch.cumsum(per_cluster.cpu() - 1, 0) - (per_cluster.cpu() - 1)
        rank_in_cluster = torch.arange(owner.shape[0]) - first[owner]
        idx.copy_(order[start[owner] + rank_in_cluster % counts[owner]])
    return _broadcast_(idx)


# ------------------------------------------------------------------------------------------------------ trainers


class CodebookStep(NamedTuple):
    quantized: torch.Tensor  # [..., d]: straight-through when updating, else exactly the codebook rows
    codes: torch.Tensor  # [...]
    commit_loss: torch.Tensor  # float32 scalar
    stats: dict[str, torch.Tensor]  # perplexity, codes_used (fraction of K), codes_replaced


class EMACodebookTrainer:
    """Training-time forward of one :class:`EuclideanCodebook` (no ``nn.Module``: it owns no parameters).

    ``step`` updates the buffers (k-means if ``inited == 0``, EMA, dead-code replacement) only when the
    codebook is in training mode and grad is enabled; otherwise it only assigns codes, never communicates
    and returns the codebook rows themselves. Stats describe this batch (all ranks' when updating).
    """

    def __init__(
        self, codebook: EuclideanCodebook, *, decay: float = 0.99, eps: float = 1e-5, threshold_dead: float = 2.0,
        kmeans_clusters: int | None = None, kmeans_iters: int = 50, kmeans_max_samples: int | None = None,
        generator: torch.Generator | None = None,
    ):
        self.codebook = codebook
        self.decay, self.eps, self.threshold_dead = decay, eps, threshold_dead
        self.kmeans_clusters, self.kmeans_iters = kmeans_clusters, kmeans_iters
        self.kmeans_max_samples = kmeans_max_samples
        self.generator = generator

    def updates_enabled(self) -> bool:
        return self.codebook.training and torch.is_grad_enabled()

    def step(self, z: torch.Tensor) -> CodebookStep:
        """``z [..., d]`` -> :class:`CodebookStep` with ``quantized [..., d]`` and ``codes [...]``."""
        cb = self.codebook
        if not self.updates_enabled():
            with torch.no_grad():
                codes = nearest_code(z, cb.embed)
                e = F.embedding(codes, cb.embed)
                commit = F.mse_loss(z.float(), e.float())
            counts = torch.bincount(codes.reshape(-1), minlength=cb.codebook_size).float()
            return CodebookStep(e.to(z.dtype), codes, commit, _usage_stats(counts, 0))
        if not bool(cb.inited.item()):
            kmeans_init_(cb, z, num_clusters=self.kmeans_clusters, iters=self.kmeans_iters,
                         max_samples=self.kmeans_max_samples, eps=self.eps, generator=self.generator)
        ste = straight_through(z, cb.embed)
        counts = ema_update_(cb, z, ste.codes, decay=self.decay, eps=self.eps)
        replaced = replace_dead_codes_(cb, z, threshold=self.threshold_dead, eps=self.eps, generator=self.generator)
        return CodebookStep(ste.quantized, ste.codes, ste.commit_loss, _usage_stats(counts, replaced.numel()))


def _usage_stats(counts: torch.Tensor, replaced: int) -> dict[str, torch.Tensor]:
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p * p.clamp(min=1e-10).log()).sum()
    return {"perplexity": entropy.exp(), "codes_used": (counts > 0).float().mean(),
            "codes_replaced": torch.tensor(float(replaced))}


def sample_num_quantizers(choices: Sequence[int], *, generator: torch.Generator | None = None) -> int:
    """A random number of active RVQ stages from ``choices`` ("bandwidth sampling", SoundStream's quantizer
    dropout per batch). Drawn on rank 0 and broadcast: every rank must train the same stages, since each
    stage's EMA update is a collective."""
    pick = torch.empty(1, dtype=torch.long, device=_comm_device())
    if _world()[0] == 0:
        pick.fill_(int(torch.randint(len(choices), (1,), generator=generator)))
    return int(choices[int(_broadcast_(pick))])


class RVQStep(NamedTuple):
    quantized: torch.Tensor  # [B, D, T], sum of the active stages' project_out(straight-through)
    codes: torch.Tensor  # [B, n_q, T]
    commit_loss: torch.Tensor  # mean over active stages (EnCodec/Higgs)
    stats: dict[str, torch.Tensor]  # "q{i}/perplexity", ...


class RVQTrainer:
    """Training forward of a :class:`ResidualVectorQuantizer`: one :class:`EMACodebookTrainer` per stage
    (keyword arguments shared, including the generator). ``project_in``/``project_out`` are ordinary
    trainable Linear layers; stage ``q+1`` quantizes ``r_q - project_out_q(q_q)`` with gradients flowing
    through the residual, as in EnCodec's ``ResidualVectorQuantization``."""

    def __init__(self, rvq: ResidualVectorQuantizer, **codebook_options):
        self.rvq = rvq
        self.stages = [EMACodebookTrainer(q.codebook, **codebook_options) for q in rvq.quantizers]

    def step(self, x: torch.Tensor, num_quantizers: int | None = None) -> RVQStep:
        """``x [B, D, T]`` through the first ``num_quantizers`` stages (all by default)."""
        n = self.rvq.num_quantizers if num_quantizers is None else num_quantizers
        residual = x.to(self.rvq.quantizers[0].project_in.weight.dtype)
        out, codes, losses, stats = 0.0, [], [], {}
        for i, (quantizer, stage) in enumerate(zip(self.rvq.quantizers[:n], self.stages[:n])):
            res = stage.step(quantizer.project_in(residual.transpose(1, 2)))
            quantized = quantizer.project_out(res.quantized).transpose(1, 2)
            residual = residual - quantized
            out = out + quantized
            codes.append(res.codes)
            losses.append(res.commit_loss)
            stats.update({f"q{i}/{k}": v for k, v in res.stats.items()})
        return RVQStep(out, torch.stack(codes, dim=1), torch.stack(losses).mean(), stats)
