"""scRCL training losses (paper Eq. 3-10).

Notation shared by every function here:

* ``e_m, e_g``: ``(N, d)`` row-L2-normalised cell embeddings of the MLP and GNN views (Ēᵐ, Ēᵍ).
* ``z_m, z_g``: ``(N, c')`` row-L2-normalised refined representations (Zᵐ, Zᵍ).
* ``cell_graph``: sparse ``(N, N)`` adjacency A (CSR, values 1.0, symmetric, no self loops).
  The losses use Ã = A + I, formed implicitly: the identity is added as ``+ dense`` after each
  sparse-dense product, so no dense ``N x N`` matrix exists in ``"linear"`` mode.
* ``tau``: softmax temperature.
* ``qᵛᵢ = softmax(Ēᵛᵢ / τ)``: per-cell distribution over the ``d`` embedding dimensions.

Two implementations are selectable with ``impl``:

* ``"dense"``: the paper's form; builds κ and S as ``N x N`` matrices. For tests and benchmarks.
* ``"linear"`` (default): exact algebraic rewrite in O(N·k·d) time and memory (k = mean degree),
  with no ``N x N`` tensor.

How the linear forms stay exact and fast:

* A symmetric KL between two softmaxes needs no logarithm. With p = softmax(x/τ), q = softmax(y/τ):
  log p − log q = (x − y)/τ − const and Σ (p − q) = 0, so ``KL(p‖q) + KL(q‖p) = Σ (p − q)(x − y)/τ``.
  Hence κᵢⱼ = (Pᵢ − Qⱼ)·(Ēᵐᵢ − Ēᵍⱼ)/τ, and HEA is the same expression over the flattened matrices
  (global level) and on the diagonal (cell level).
* HEA and NDC are autograd functions with hand-derived backward passes that go through the rows
  in blocks of a few MB, so their temporaries are reused instead of allocated (and page-faulted)
  afresh for every elementwise step; NDC's sparse products run block by block too.
* Precision. NDC's float64 parts are where digits would otherwise be lost: (1) the row softmaxes,
  kept as deviations P − 1/d (stored in the input dtype): near-uniform rows differ from 1/d by
  ~|x|/(dτ), and κ is a product of such differences, so a float32 softmax would put its rounding
  error (relative to 1/d) straight into κ; (2) every sum over all N cells (column sums, the row
  sums Rᵢ = Σⱼ κᵢⱼ, Σⱼ βⱼ, the final mean), which add N terms that partly cancel. Everything
  else — the sparse products and the per-row dot products, i.e. all the O(nnz·d) and O(N·d) work —
  runs in the input dtype on centred vectors: κ is unchanged when one vector is subtracted from
  both Pᵢ and Qⱼ, or from both Ēᵐᵢ and Ēᵍⱼ, so NDC subtracts the component all cells share (for Ēᵍ
  as a rank-one correction of its sparse product) and the products add terms of the size of the
  spread between cells rather than of the shared component. HEA works in the input dtype
  throughout (as the paper's form does). CVC is O(N·c'), tiny, and stays in float64.

Every loss is a pure function of its tensors.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from scrcl.model.sparse import constant_mm

__all__ = ["hea_loss", "kappa_matrix", "ndc_loss", "cvc_loss", "scrcl_loss"]

_IMPLS = ("linear", "dense")

# Row blocks on CPU. Elementwise work runs on blocks of ~8 MB (float32): such temporaries stay in
# glibc's heap, so each block reuses the previous block's memory, whereas a fresh N x d buffer costs a
# page fault per 4 kB, more than the arithmetic on it. Sparse products run on larger blocks (their
# output buffer is allocated once per call): the fewer the blocks, the fewer times the dense operand
# is streamed through the cache.
_BLOCK_ELEMENTS = 1 << 21
_SPARSE_BLOCK_ELEMENTS = 1 << 24


def _check_impl(impl: str) -> None:
    if impl not in _IMPLS:
        raise ValueError(f"unknown impl {impl!r}; expected one of {_IMPLS}")


def _check_views(a: Tensor, b: Tensor, names: str) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"{names} must be 2-D tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_graph(cell_graph: Tensor, n: int) -> None:
    if tuple(cell_graph.shape) != (n, n):
        raise ValueError(f"cell_graph must have shape ({n}, {n}), got {tuple(cell_graph.shape)}")


def _sparse_values(cell_graph: Tensor) -> Tensor:
    """Stored values of a sparse CSR (or COO) matrix."""
    if cell_graph.layout == torch.sparse_coo:
        return cell_graph.coalesce().values()
    return cell_graph.values()


def _work_dtype(x: Tensor) -> torch.dtype:
    """float64 inputs stay float64; anything else (float32, bf16/fp16 under autocast) runs in float32.

    The loss values come out in this dtype too, so that under mixed precision the objective and its
    logged terms keep float32's digits (bfloat16 holds about 3 significant digits)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _row_blocks(
    stop: int, width: int, device: torch.device, elements: int = _BLOCK_ELEMENTS, start: int = 0
) -> list[tuple[int, int]]:
    """Row ranges ``[r0, r1)`` covering ``start..stop`` with about ``elements`` entries of a row of
    ``width`` each; one block on accelerators (no page-fault cost there)."""
    rows = stop - start if device.type != "cpu" else max(1, elements // max(width, 1))
    return [(r0, min(stop, r0 + rows)) for r0 in range(start, stop, max(rows, 1))]


def _csr_parts(graph: Tensor, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(row pointers, column indices, values) of a sparse matrix as CSR, values in ``dtype``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        if graph.layout != torch.sparse_csr:
            graph = graph.to_sparse_csr()
    graph = graph.to(device)
    return graph.crow_indices(), graph.col_indices(), graph.values().to(dtype)


def _csr_rows(crow: Tensor, col: Tensor, val: Tensor, r0: int, r1: int, n_cols: int) -> Tensor:
    """Rows ``r0:r1`` of a CSR matrix as a ``(r1 - r0, n_cols)`` CSR tensor (views, no copy of indices)."""
    if r0 == 0 and r1 == crow.numel() - 1:
        lo, hi, ptr = 0, col.numel(), crow
    else:
        lo, hi = int(crow[r0]), int(crow[r1])
        ptr = crow[r0 : r1 + 1] - lo
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(ptr, col[lo:hi], val[lo:hi], size=(r1 - r0, n_cols))


def _sparse_rows_mm_add(block: Tensor, dense: Tensor, out: Tensor, alpha: float = 1.0) -> Tensor:
    """``out += alpha · block @ dense`` in place, for a CSR ``block`` (R, N) and ``dense`` (N, w).

    On CPU, when the block has many non-zeros per row of ``dense`` (small N), by column strips of
    ~8 MB: the rows the sparse matrix gathers then stay in cache (about 2x faster at N = 4k). Each
    strip is copied once per call, which at large N costs more than it saves, so there the product
    runs over the whole width.
    """
    n, width = dense.shape
    step = min(512, max(32, (8 << 20) // (4 * max(n, 1))))
    if dense.device.type != "cpu" or width <= step or block.values().numel() < 8 * n:
        return torch.addmm(out, block, dense, alpha=alpha, out=out)
    for c0 in range(0, width, step):
        strip = out[:, c0 : c0 + step]
        torch.addmm(strip, block, dense[:, c0 : c0 + step], alpha=alpha, out=strip)
    return out


def _row_dot(a: Tensor, b: Tensor) -> Tensor:
    """Σ_k a_ik b_ik for each row, ``(R,)``."""
    return (a * b).sum(dim=1)


def _softmax_deviation(x: Tensor, tau: float) -> Tensor:
    """``softmax_row(x / τ) − 1/d`` in float64, ``(R, d)``."""
    p = torch.softmax(x.to(torch.float64, copy=True).div_(tau), dim=1)
    return p.sub_(1.0 / x.shape[1])


# --------------------------------------------------------------------------------------------
# HEA, Eq. 3
# --------------------------------------------------------------------------------------------


def _hea_global(x: Tensor, y: Tensor, tau: float) -> tuple[Tensor, tuple[Tensor, ...]]:
    """HEA's global level over the flattened matrices, block by block.

    Returns ``Σ (p − q)(x − y)`` (float64) and ``(lse_x, lse_y, ⟨x − y, p⟩, ⟨x − y, q⟩)`` for the
    backward pass, p = softmax(x.flatten()/τ) = exp(x/τ − lse_x), likewise q.
    """
    blocks = _row_blocks(x.shape[0], x.shape[1], x.device)
    lse_x = torch.stack([torch.logsumexp(x[r0:r1].flatten() / tau, 0) for r0, r1 in blocks]).logsumexp(0)
    lse_y = torch.stack([torch.logsumexp(y[r0:r1].flatten() / tau, 0) for r0, r1 in blocks]).logsumexp(0)
    glob = p_diff = x.new_zeros((), dtype=torch.float64)
    for r0, r1 in blocks:
        diff = x[r0:r1] - y[r0:r1]
        p = torch.exp(x[r0:r1] / tau - lse_x)
        q = torch.exp(y[r0:r1] / tau - lse_y)
        p_diff = p_diff + _row_dot(p, diff).sum(dtype=torch.float64)
        glob = glob + _row_dot(p.sub_(q), diff).sum(dtype=torch.float64)
    return glob, (lse_x, lse_y, p_diff.to(x.dtype), (p_diff - glob).to(x.dtype))


def _hea_grad(xb: Tensor, yb: Tensor, pr: Tensor, qr: Tensor, tau: float, glob: tuple, w_glob: Tensor,
              w_cell: Tensor, view: str) -> Tensor:
    """Gradient of ``w_glob·Σ(p − q)(x − y) + w_cell·Σᵢ (Pᵢ − Qᵢ)·(Xᵢ − Yᵢ)`` for rows ``xb``, ``yb``.

    ``view`` ``"x"`` or ``"y"``; ``pr``, ``qr``: the row softmaxes P, Q of those rows; ``glob`` from
    :func:`_hea_global`. d/dx Σ(p − q)(x − y) = (p − q) + p ∘ ((x − y) − ⟨x − y, p⟩)/τ, and the mirror
    image in y; the same row by row for the cell level.
    """
    lse_x, lse_y, p_diff, q_diff = glob
    diff = xb - yb
    p = torch.exp(xb / tau - lse_x)
    q = torch.exp(yb / tau - lse_y)
    if view == "x":
        out = (p - q).add_(p * (diff - p_diff) / tau).mul_(w_glob)
        return out.add_(((pr - qr) + pr * (diff - _row_dot(pr, diff)[:, None]) / tau).mul_(w_cell))
    out = (q - p).sub_(q * (diff - q_diff) / tau).mul_(w_glob)
    return out.sub_(((pr - qr) + qr * (diff - _row_dot(qr, diff)[:, None]) / tau).mul_(w_cell))


class _HEA(torch.autograd.Function):
    """L_HEA in the log-free form; saves only the two inputs and four scalars for the backward pass."""

    @staticmethod
    def forward(ctx, e_m: Tensor, e_g: Tensor, tau: float) -> Tensor:
        with torch.autocast(e_m.device.type, enabled=False):
            x, y = e_m.to(_work_dtype(e_m)), e_g.to(_work_dtype(e_m))
            n, d = x.shape
            glob, state = _hea_global(x, y, tau)
            cell = x.new_zeros((), dtype=torch.float64)
            for r0, r1 in _row_blocks(n, d, x.device):
                xb, yb = x[r0:r1], y[r0:r1]
                pr, qr = torch.softmax(xb / tau, dim=1), torch.softmax(yb / tau, dim=1)
                cell = cell + _row_dot(pr.sub_(qr), xb - yb).sum(dtype=torch.float64)
            loss = glob / tau + cell / (2.0 * n * tau)
        ctx.save_for_backward(e_m, e_g)
        ctx.tau, ctx.state = tau, state
        return loss.to(_work_dtype(e_m))

    @staticmethod
    def backward(ctx, grad: Tensor):
        e_m, e_g = ctx.saved_tensors
        tau = ctx.tau
        with torch.autocast(e_m.device.type, enabled=False):
            x, y = e_m.to(_work_dtype(e_m)), e_g.to(_work_dtype(e_m))
            n, d = x.shape
            g = grad.to(x.dtype)
            w_glob, w_cell = g / tau, g / (2.0 * n * tau)
            gx, gy = torch.empty_like(x), torch.empty_like(y)
            for r0, r1 in _row_blocks(n, d, x.device):
                xb, yb = x[r0:r1], y[r0:r1]
                pr, qr = torch.softmax(xb / tau, dim=1), torch.softmax(yb / tau, dim=1)
                gx[r0:r1] = _hea_grad(xb, yb, pr, qr, tau, ctx.state, w_glob, w_cell, "x")
                gy[r0:r1] = _hea_grad(xb, yb, pr, qr, tau, ctx.state, w_glob, w_cell, "y")
        return gx.to(e_m.dtype), gy.to(e_g.dtype), None


def hea_loss(e_m: Tensor, e_g: Tensor, tau: float) -> Tensor:
    """Hierarchical embedding alignment loss, Eq. 3 (global + cell level, symmetric KL).

    Global level: pᵛ = softmax over all ``N·d`` entries of Ēᵛ/τ (one softmax over the flattened
    matrix), ``L_glob = KL(pᵐ‖pᵍ) + KL(pᵍ‖pᵐ)``.

    Cell level: qᵛᵢ = softmax over the ``d`` entries of row Ēᵛᵢ/τ,
    ``L_cell = ½·[mean_i KL(qᵐᵢ‖qᵍᵢ) + mean_i KL(qᵍᵢ‖qᵐᵢ)]``.

    ``L_HEA = L_glob + L_cell``, with ``KL(p‖q) = Σ p (log p − log q)``.

    Computed without logarithms: ``KL(p‖q) + KL(q‖p) = Σ (p − q)(x − y)/τ`` for p = softmax(x/τ),
    q = softmax(y/τ) (see the module docstring), in O(N·d) with a hand-written backward pass.

    Args:
        e_m, e_g: ``(N, d)`` normalised embeddings of the two views.
        tau: temperature.

    Returns:
        0-dim tensor in the input dtype (float32 for bfloat16/float16 inputs).
    """
    _check_views(e_m, e_g, "e_m and e_g")
    return _HEA.apply(e_m, e_g, tau)


# --------------------------------------------------------------------------------------------
# κ, Eq. 5, and NDC, Eq. 4
# --------------------------------------------------------------------------------------------


def kappa_matrix(e_m: Tensor, e_g: Tensor, tau: float) -> Tensor:
    """Dense pairwise symmetric KL between the views, Eq. 5.

    ``κᵢⱼ = KL(qᵐᵢ‖qᵍⱼ) + KL(qᵍⱼ‖qᵐᵢ)`` with qᵛᵢ = softmax_row(Ēᵛᵢ/τ). With P = qᵐ, Q = qᵍ,
    ``aᵢ = Σ_k P_ik log P_ik`` and ``bⱼ = Σ_k Q_jk log Q_jk`` this expands to
    ``κ = a 1ᵀ + 1 bᵀ − P (log Q)ᵀ − (log P) Qᵀ``: two matrix products, never ``N x N x d``.

    Computed in the input dtype (the paper's form). Note the expansion cancels O(log d) terms,
    so in float32 entries carry an absolute error of roughly 1e-6.

    Args:
        e_m, e_g: ``(N, d)`` normalised embeddings.
        tau: temperature.

    Returns:
        ``(N, N)`` tensor, row i = MLP-view cell i, column j = GNN-view cell j.
    """
    _check_views(e_m, e_g, "e_m and e_g")
    logp = F.log_softmax(e_m / tau, dim=1)
    logq = F.log_softmax(e_g / tau, dim=1)
    p, q = logp.exp(), logq.exp()
    a = (p * logp).sum(dim=1)
    b = (q * logq).sum(dim=1)
    return a[:, None] + b[None, :] - p @ logq.T - logp @ q.T


def _shifts(y: Tensor, tau: float, work: torch.dtype) -> tuple[Tensor, Tensor]:
    """Common shifts ``(m_y, m_q)`` (d,) for X, Y and for P − 1/d, Q − 1/d.

    κ is the same for any shifts (they cancel in Pᵢ − Qⱼ and Xᵢ − Yⱼ), so they need not be exact
    means: the mean over at most 2048 evenly spaced rows takes out what all cells share. ``m_y`` is
    rounded to ``work`` (then X − m_y is exact to one rounding), ``m_q`` stays float64.
    """
    n = y.shape[0]
    sample = torch.linspace(0, n - 1, min(n, 2048), device=y.device).round().long()
    return y[sample].double().mean(dim=0).to(work), _softmax_deviation(y[sample], tau).mean(dim=0)


def _view_block(e: Tensor, r0: int, r1: int, tau: float, m_y: Tensor, m_q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rows ``r0:r1`` of one view: ``(E − m_y, P − 1/d − m_q, P)``, P = softmax_row(E/τ), in E's dtype.

    The softmax is float64 and the deviation P − 1/d − m_q is formed before rounding.
    """
    rows = e[r0:r1]
    p = torch.softmax(rows.to(torch.float64, copy=True).div_(tau), dim=1)
    p_work = p.to(e.dtype, copy=True)  # a copy even for float64: p is overwritten next
    return rows - m_y, p.sub_(m_q + 1.0 / e.shape[1]).to(e.dtype), p_work


def _deviations(e: Tensor, tau: float, m_y: Tensor, m_q: Tensor) -> Tensor:
    """P − 1/d − m_q for all rows of one view, ``(N, d)`` in E's dtype (see :func:`_view_block`)."""
    out = torch.empty_like(e)
    for r0, r1 in _row_blocks(e.shape[0], e.shape[1], e.device):
        out[r0:r1] = _view_block(e, r0, r1, tau, m_y, m_q)[1]
    return out


def _column_sums(m: Tensor) -> Tensor:
    """Σ over rows of ``m`` (N, w), block sums accumulated in float64, ``(w,)``."""
    total = torch.zeros(m.shape[1], dtype=torch.float64, device=m.device)
    for r0, r1 in _row_blocks(m.shape[0], m.shape[1], m.device):
        total += m[r0:r1].sum(dim=0)
    return total


def _aggregate(block: Tensor, left: Tensor, right: Tensor, out: Tensor, alpha: float = 1.0) -> Tensor:
    """``out[:, :d] += α·block @ left``, ``out[:, d:] += α·block @ right`` (block: CSR rows, out: (R, 2d))."""
    d = left.shape[1]
    _sparse_rows_mm_add(block, left, out[:, :d], alpha)
    _sparse_rows_mm_add(block, right, out[:, d:], alpha)
    return out


class _NDCLinear(torch.autograd.Function):
    """L_NDC in O(N·d + nnz·d) with a hand-derived backward pass (see :func:`ndc_loss`).

    X = Ēᵐ, Y = Ēᵍ, hats: after the common shifts (:func:`_shifts`). With k = τκ (τ cancels in
    pos/neg), sᵢ = Σⱼ Ãᵢⱼ kᵢⱼ, rᵢ = Σ_{j≠i} kᵢⱼ and L = mean_i (N−1)·sᵢ / (deg̃ᵢ·rᵢ), the weight of
    kᵢⱼ in dL is ωᵢⱼ = uᵢ Ãᵢⱼ + vᵢ (1 − δᵢⱼ) with uᵢ = (N−1)/(N deg̃ᵢ rᵢ) and
    vᵢ = −(N−1) sᵢ/(N deg̃ᵢ rᵢ²). As ∂kᵢⱼ/∂Pᵢ = Xᵢ − Yⱼ and ∂kᵢⱼ/∂Xᵢ = Pᵢ − Qⱼ:

    * ∂L/∂Pᵢ = ρᵢ X̂ᵢ − uᵢ (ÃŶ)ᵢ − vᵢ (ΣŶ − Ŷᵢ) and ∂L/∂Xᵢ (direct) = ρᵢ P̂ᵢ − uᵢ (ÃQ̂)ᵢ − vᵢ (ΣQ̂ − Q̂ᵢ),
      ρᵢ = Σⱼ ωᵢⱼ;
    * ∂L/∂Qⱼ = γⱼ Ŷⱼ − (Ãᵀ diag(u) X̂)ⱼ − vᵀX̂ + vⱼ X̂ⱼ and ∂L/∂Yⱼ (direct) the same with (Q̂, P̂) for
      (Ŷ, X̂), γⱼ = Σᵢ ωᵢⱼ;

    then the softmax Jacobian maps ∂L/∂P onto X: P ∘ (g − ⟨g, P⟩)/τ. Memory: besides the inputs, the
    forward pass keeps Q̂ (N, d); the backward pass holds at most three (N, d) arrays (Q̂ or Y's
    gradient, P̂, X's gradient) plus one block buffer.

    With ``with_hea`` it also returns L_HEA (second output) and adds its gradient block by block, so
    the objective's two O(N·d) terms share their passes and one pair of gradient arrays.
    """

    @staticmethod
    def forward(ctx, e_m: Tensor, e_g: Tensor, crow: Tensor, col: Tensor, val: Tensor, tau: float,
                with_hea: bool) -> tuple[Tensor, Tensor]:
        with torch.autocast(e_m.device.type, enabled=False):
            work = _work_dtype(e_m)
            x, y = e_m.to(work), e_g.to(work)
            n, d = x.shape
            glob, ctx.hea_state = _hea_global(x, y, tau) if with_hea else (None, None)
            cell = x.new_zeros((), dtype=torch.float64)
            m_y, m_q = _shifts(y, tau, work)
            q_hat = _deviations(y, tau, m_y, m_q)
            sum_q = _column_sums(q_hat)  # ΣQ̂ and ΣŶ: ≈ 0, kept so that the shifts need not be exact means
            sum_y = _column_sums(y) - n * m_y.double()
            graph64 = _csr_rows(crow, col, val.double(), 0, n, n)
            deg = (graph64 @ torch.ones(n, 1, dtype=torch.float64, device=y.device))[:, 0] + 1.0  # row sums of Ã
            sum_q_w, sum_y_w, deg_w = sum_q.to(work), sum_y.to(work), deg.to(work)
            alpha, beta, cross, e_dot, t_dot = (torch.empty(n, dtype=torch.float64, device=y.device) for _ in range(5))
            outer = _row_blocks(n, 2 * d, y.device, _SPARSE_BLOCK_ELEMENTS)
            buffer = torch.empty(outer[0][1], 2 * d, dtype=work, device=y.device)
            for s0, s1 in outer:
                agg = buffer[: s1 - s0]
                agg[:, :d], agg[:, d:] = y[s0:s1], q_hat[s0:s1]  # the "+ I" of Ã
                _aggregate(_csr_rows(crow, col, val, s0, s1, n), y, q_hat, agg)
                agg[:, :d].addr_(deg_w[s0:s1], m_y, alpha=-1.0)  # [Ã Ŷ | Ã Q̂]
                for r0, r1 in _row_blocks(s1, 2 * d, y.device, start=s0):
                    xb, pb, _ = _view_block(x, r0, r1, tau, m_y, m_q)
                    yb, qb, ab = y[r0:r1] - m_y, q_hat[r0:r1], agg[r0 - s0 : r1 - s0]
                    alpha[r0:r1] = _row_dot(xb, pb)  # P̂ᵢ·X̂ᵢ
                    beta[r0:r1] = _row_dot(yb, qb)  # Q̂ᵢ·Ŷᵢ
                    cross[r0:r1] = _row_dot(xb, qb) + _row_dot(pb, yb)  # X̂ᵢ·Q̂ᵢ + P̂ᵢ·Ŷᵢ
                    e_dot[r0:r1] = xb @ sum_q_w + pb @ sum_y_w  # X̂ᵢ·ΣQ̂ + P̂ᵢ·ΣŶ
                    t_dot[r0:r1] = _row_dot(xb, ab[:, d:]) + _row_dot(pb, ab[:, :d])  # X̂ᵢ·(ÃQ̂)ᵢ + P̂ᵢ·(ÃŶ)ᵢ
                    if with_hea:  # τ κᵢᵢ = (Pᵢ − Qᵢ)·(Xᵢ − Yᵢ), HEA's cell level
                        cell += _row_dot(pb - qb, x[r0:r1] - y[r0:r1]).sum(dtype=torch.float64)
            del buffer, agg
            s = deg * alpha + (graph64 @ beta[:, None])[:, 0] + beta - t_dot  # τ Σⱼ Ãᵢⱼ κᵢⱼ
            r = n * alpha + beta.sum() - e_dot - (alpha + beta - cross)  # τ (Rᵢ − κᵢᵢ)
            ratio = (n - 1) * s / (deg * r)
            hea = glob / tau + cell / (2.0 * n * tau) if with_hea else cell
        ctx.save_for_backward(e_m, e_g, crow, col, val, deg, r, ratio, m_y, m_q, sum_q, sum_y)
        ctx.q_hat = q_hat  # an attribute, not a saved tensor, so the backward pass can free it early
        ctx.tau = tau
        return ratio.mean().to(_work_dtype(e_m)), hea.to(_work_dtype(e_m))

    @staticmethod
    def backward(ctx, grad: Tensor, grad_hea: Tensor):
        e_m, e_g, crow, col, val, deg, r, ratio, m_y, m_q, sum_q, sum_y = ctx.saved_tensors
        q_hat, ctx.q_hat = ctx.q_hat, None  # freed as soon as this pass is done with it
        tau, hea_state = ctx.tau, ctx.hea_state
        with torch.autocast(e_m.device.type, enabled=False):
            work = _work_dtype(e_m)
            x, y = e_m.to(work), e_g.to(work)
            n, d = x.shape
            if q_hat is None:  # a second backward through the same graph (retain_graph): recompute it
                q_hat = _deviations(y, tau, m_y, m_q)
            shift = (m_q + 1.0 / d).to(work)  # P = P̂ + shift, Q = Q̂ + shift
            if hea_state is not None:
                w_glob, w_cell = grad_hea.to(work) / tau, grad_hea.to(work) / (2.0 * n * tau)
            u = (n - 1) / (n * deg * r)
            v = -ratio / (n * r)
            crow_t, col_t, val_t = crow, col, val.double()  # A is symmetric (every loss's contract): Aᵀ = A
            at_u = (_csr_rows(crow_t, col_t, val_t, 0, n, n) @ u[:, None])[:, 0]  # Aᵀu
            rho = u * deg + (n - 1) * v  # Σⱼ ωᵢⱼ
            gamma = at_u + u + v.sum() - v  # Σᵢ ωᵢⱼ
            val_tu = (val_t * u[col_t]).to(work)  # Aᵀ diag(u)
            g = grad.to(work)
            sum_q, sum_y, at_u_w, deg_w = sum_q.to(work), sum_y.to(work), at_u.to(work), deg.to(work)
            u, v, rho, gamma = (t.to(work)[:, None] for t in (u, v, rho, gamma))
            outer = _row_blocks(n, 2 * d, x.device, _SPARSE_BLOCK_ELEMENTS)
            buffer = torch.empty(outer[0][1], 2 * d, dtype=work, device=x.device)

            # X's gradient, keeping P̂ for the second pass.
            gx, p_hat = torch.empty_like(x), torch.empty_like(x)
            for s0, s1 in outer:
                agg = buffer[: s1 - s0]
                agg[:, :d], agg[:, d:] = y[s0:s1], q_hat[s0:s1]
                _aggregate(_csr_rows(crow, col, val, s0, s1, n), y, q_hat, agg)
                agg[:, :d].addr_(deg_w[s0:s1], m_y, alpha=-1.0)  # [Ã Ŷ | Ã Q̂]
                for r0, r1 in _row_blocks(s1, 2 * d, x.device, start=s0):
                    xb, pb, p = _view_block(x, r0, r1, tau, m_y, m_q)
                    p_hat[r0:r1] = pb
                    ab, ub, vb, rb = agg[r0 - s0 : r1 - s0], u[r0:r1], v[r0:r1], rho[r0:r1]
                    g_p = ab[:, :d].mul_(-ub).addcmul_(xb, rb).addcmul_(y[r0:r1] - m_y - sum_y, vb)
                    g_x = ab[:, d:].mul_(-ub).addcmul_(pb, rb).addcmul_(q_hat[r0:r1] - sum_q, vb)
                    _softmax_backward(g_p, g_x, p, tau, g, gx[r0:r1])
                    if hea_state is not None:
                        gx[r0:r1] += _hea_grad(x[r0:r1], y[r0:r1], p, q_hat[r0:r1] + shift, tau, hea_state,
                                               w_glob, w_cell, "x")
            del q_hat

            # Y's gradient: vᵀX̂ and vᵀP̂, then Ãᵀ diag(u) [X̂ | P̂] block by block.
            v_x = torch.zeros(d, dtype=torch.float64, device=x.device)
            v_p = torch.zeros(d, dtype=torch.float64, device=x.device)
            for r0, r1 in _row_blocks(n, d, x.device):
                v_x += (x[r0:r1] - m_y).T @ v[r0:r1, 0]  # centred first: Σ vᵢ Xᵢ alone would cancel
                v_p += p_hat[r0:r1].T @ v[r0:r1, 0]
            v_x, v_p = v_x.to(work), v_p.to(work)
            gy = torch.empty_like(y)
            for s0, s1 in outer:
                agg = buffer[: s1 - s0].zero_()
                _aggregate(_csr_rows(crow_t, col_t, val_tu, s0, s1, n), x, p_hat, agg, alpha=-1.0)
                agg[:, :d].addr_(at_u_w[s0:s1], m_y)  # −[Aᵀ diag(u) X̂ | Aᵀ diag(u) P̂]
                for r0, r1 in _row_blocks(s1, 2 * d, x.device, start=s0):
                    yb, qb, q = _view_block(y, r0, r1, tau, m_y, m_q)
                    xb, pb = x[r0:r1] - m_y, p_hat[r0:r1]
                    ab, ub, vb, gb = agg[r0 - s0 : r1 - s0], u[r0:r1], v[r0:r1], gamma[r0:r1]
                    g_q = ab[:, :d].addcmul_(yb, gb).addcmul_(xb, vb - ub).sub_(v_x)
                    g_y = ab[:, d:].addcmul_(qb, gb).addcmul_(pb, vb - ub).sub_(v_p)
                    _softmax_backward(g_q, g_y, q, tau, g, gy[r0:r1])
                    if hea_state is not None:
                        gy[r0:r1] += _hea_grad(x[r0:r1], y[r0:r1], pb + shift, q, tau, hea_state, w_glob, w_cell, "y")
        return gx.to(e_m.dtype), gy.to(e_g.dtype), None, None, None, None, None


def _softmax_backward(g_p: Tensor, g_direct: Tensor, p: Tensor, tau: float, scale: Tensor, out: Tensor) -> None:
    """``out = scale·(g_direct + p ∘ (g_p − ⟨g_p, p⟩)/τ)``: the chain rule through p = softmax_row(x/τ).

    Overwrites ``g_p``.
    """
    g_p.sub_(_row_dot(g_p, p)[:, None]).mul_(p).div_(tau)
    torch.add(g_direct, g_p, out=out)
    out.mul_(scale)


def ndc_loss(
    e_m: Tensor, e_g: Tensor, cell_graph: Tensor, tau: float, impl: str = "linear"
) -> Tensor:
    """Neighbourhood-driven contrastive loss, Eq. 4.

    Positives of cell i are its graph neighbours and itself (row i of Ã = A + I), negatives every
    other cell::

        L_NDC = mean_i [ (Σ_{j∈N(i)∪{i}} κᵢⱼ / (|N(i)|+1)) / (Σ_{j≠i} κᵢⱼ / (N−1)) ]

    with κ from Eq. 5 (:func:`kappa_matrix`). ``|N(i)|`` is the row sum of A.

    ``impl="dense"`` builds κ (``N x N``). ``impl="linear"`` is exact in O(N·d + nnz·d):
    with P, Q, a, b as in :func:`kappa_matrix`,

    * all-j row sum ``Rᵢ = N·aᵢ + Σⱼ bⱼ − Pᵢ·Σⱼ log Qⱼ − log Pᵢ·Σⱼ Qⱼ``;
    * negatives ``Rᵢ − κᵢᵢ``;
    * positives ``Σⱼ Ãᵢⱼ κᵢⱼ = deg̃ᵢ aᵢ + (Ã b)ᵢ − Pᵢ·(Ã log Q)ᵢ − log Pᵢ·(Ã Q)ᵢ``.

    It evaluates them in the equivalent log-free form κᵢⱼ = (Pᵢ − Qⱼ)·(Xᵢ − Yⱼ)/τ (X = Ēᵐ,
    Y = Ēᵍ; module docstring), after a common shift of P, Q and of X, Y (which leaves κ unchanged),
    with ``αᵢ = P̂ᵢ·X̂ᵢ``, ``βⱼ = Q̂ⱼ·Ŷⱼ``:

    * ``τRᵢ = N·αᵢ + Σⱼ βⱼ − P̂ᵢ·Σⱼ Ŷⱼ − X̂ᵢ·Σⱼ Q̂ⱼ``, ``τκᵢᵢ = αᵢ + βᵢ − P̂ᵢ·Ŷᵢ − X̂ᵢ·Q̂ᵢ``;
    * ``τ Σⱼ Ãᵢⱼ κᵢⱼ = deg̃ᵢ αᵢ + (Ã β)ᵢ − P̂ᵢ·(Ã Ŷ)ᵢ − X̂ᵢ·(Ã Q̂)ᵢ``: sparse products, block by block.

    Precision: the softmaxes (as P − 1/d) and every sum over all N cells — Rᵢ, Σβ, the column
    sums, the mean — are float64; the products are in the input dtype, on centred vectors (module
    docstring). The backward pass is hand-written (:class:`_NDCLinear`).

    Args:
        e_m, e_g: ``(N, d)`` normalised embeddings, ``N >= 2``.
        cell_graph: sparse ``(N, N)`` adjacency A, symmetric, no self loops.
        tau: temperature.
        impl: ``"linear"`` or ``"dense"``.

    Returns:
        0-dim tensor in the dtype of ``e_m`` (float32 for bfloat16/float16 inputs).
    """
    _check_impl(impl)
    _check_views(e_m, e_g, "e_m and e_g")
    n = e_m.shape[0]
    _check_graph(cell_graph, n)
    if n < 2:
        raise ValueError(f"ndc_loss needs at least 2 cells (negatives are the other cells), got {n}")

    if impl == "dense":
        work = _work_dtype(e_m)
        with torch.autocast(e_m.device.type, enabled=False):  # as the linear form: float32 under mixed precision
            kappa = kappa_matrix(e_m.to(work), e_g.to(work), tau)
            eye = torch.eye(n, dtype=kappa.dtype, device=kappa.device)
            a_tilde = cell_graph.to_dense().to(kappa.dtype) + eye
            pos = (kappa * a_tilde).sum(dim=1) / a_tilde.sum(dim=1)
            # Masked sum rather than "all minus diagonal": the paper's form, no cancellation.
            neg = (kappa * (1.0 - eye)).sum(dim=1) / (n - 1)
            return (pos / neg).mean()

    crow, col, val = _csr_parts(cell_graph, _work_dtype(e_m), e_m.device)
    return _NDCLinear.apply(e_m, e_g, crow, col, val, tau, False)[0]


def _hea_and_ndc(e_m: Tensor, e_g: Tensor, cell_graph: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """``(hea_loss(...), ndc_loss(..., impl="linear"))`` in one pass over the data (:class:`_NDCLinear`)."""
    _check_views(e_m, e_g, "e_m and e_g")
    n = e_m.shape[0]
    _check_graph(cell_graph, n)
    if n < 2:
        raise ValueError(f"ndc_loss needs at least 2 cells (negatives are the other cells), got {n}")
    crow, col, val = _csr_parts(cell_graph, _work_dtype(e_m), e_m.device)
    ndc, hea = _NDCLinear.apply(e_m, e_g, crow, col, val, tau, True)
    return hea, ndc


# --------------------------------------------------------------------------------------------
# CVC, Eq. 8-9
# --------------------------------------------------------------------------------------------


def cvc_loss(z_m: Tensor, z_g: Tensor, cell_graph: Tensor, impl: str = "linear") -> Tensor:
    """Cross-view consistency loss, Eq. 8-9.

    ``Sᵢⱼ = cos(Zᵐᵢ, Zᵍⱼ) = (Zᵐ Zᵍᵀ)ᵢⱼ`` (rows are unit) and
    ``L_CVC = mean_{i,j} (Sᵢⱼ − Ãᵢⱼ)²`` over all ``N²`` pairs, Ã = A + I.

    ``impl="dense"`` builds S (``N x N``). ``impl="linear"`` expands the square::

        Σᵢⱼ (Sᵢⱼ − Ãᵢⱼ)² = ⟨ZᵐᵀZᵐ, ZᵍᵀZᵍ⟩_F − 2·Σᵢⱼ Ãᵢⱼ Zᵐᵢ·Zᵍⱼ + Σᵢⱼ Ãᵢⱼ²

    where ``Σ Ãᵢⱼ Zᵐᵢ·Zᵍⱼ = sum(Zᵐ ∘ (A Zᵍ)) + sum(Zᵐ ∘ Zᵍ)`` and ``Σ Ãᵢⱼ² = Σ Aᵢⱼ² + N``
    (= nnz(A) + N for binary A without self loops). O(N·c'² + nnz·c'). The terms cancel when S
    approaches Ã, so the linear form accumulates in float64 and casts back to the input dtype
    (to float32 for half-precision inputs).

    Args:
        z_m, z_g: ``(N, c')`` normalised representations.
        cell_graph: sparse ``(N, N)`` adjacency A, symmetric, no self loops.
        impl: ``"linear"`` or ``"dense"``.

    Returns:
        0-dim tensor in the dtype of ``z_m`` (float32 for bfloat16/float16 inputs).
    """
    _check_impl(impl)
    _check_views(z_m, z_g, "z_m and z_g")
    n = z_m.shape[0]
    _check_graph(cell_graph, n)

    if impl == "dense":
        work = _work_dtype(z_m)
        with torch.autocast(z_m.device.type, enabled=False):
            s = z_m.to(work) @ z_g.to(work).T
            a_tilde = cell_graph.to_dense().to(s.dtype) + torch.eye(n, dtype=s.dtype, device=s.device)
            return (s - a_tilde).square().mean()

    zm, zg = z_m.double(), z_g.double()
    gram = ((zm.T @ zm) * (zg.T @ zg)).sum()  # = Σᵢⱼ Sᵢⱼ²
    graph = cell_graph.to(device=zg.device, dtype=zg.dtype)
    cross = (zm * constant_mm(graph, zg, symmetric=True)).sum() + (zm * zg).sum()  # A symmetric by contract
    sq = _sparse_values(graph).square().sum() + n
    return ((gram - 2.0 * cross + sq) / (n * n)).to(_work_dtype(z_m))


# --------------------------------------------------------------------------------------------
# Objective, Eq. 10
# --------------------------------------------------------------------------------------------


def scrcl_loss(
    e_m: Tensor,
    e_g: Tensor,
    z_m: Tensor,
    z_g: Tensor,
    cell_graph: Tensor,
    *,
    alpha: float,
    beta: float,
    tau: float,
    hea_weight: float = 1.0,
    impl: str = "linear",
) -> dict[str, Tensor]:
    """Full scRCL objective, Eq. 10: ``L = hea_weight·L_HEA + α·L_NDC + β·L_CVC``.

    The paper has ``hea_weight = 1``. A term whose weight is 0 is neither computed nor returned
    (ablations). In ``"linear"`` mode with both HEA and NDC on, the two are computed in one pass over
    the embeddings (the same values as :func:`hea_loss` and :func:`ndc_loss`; one pair of gradient
    arrays instead of two).

    Args:
        e_m, e_g: ``(N, d)`` normalised embeddings.
        z_m, z_g: ``(N, c')`` normalised refined representations.
        cell_graph: sparse ``(N, N)`` adjacency A, symmetric, no self loops.
        alpha: NDC weight.
        beta: CVC weight.
        tau: temperature for HEA and NDC.
        hea_weight: HEA weight.
        impl: ``"linear"`` or ``"dense"`` for NDC and CVC.

    Returns:
        ``{"loss": total, "hea": ..., "ndc": ..., "cvc": ...}``, 0-dim tensors; only terms with
        a non-zero weight are present besides ``"loss"``.

    Raises:
        ValueError: unknown ``impl``, or every weight is 0 (the total would have no gradient).
    """
    _check_impl(impl)
    if hea_weight == 0 and alpha == 0 and beta == 0:
        raise ValueError("scrcl_loss: hea_weight, alpha and beta are all 0; nothing to optimise")

    terms: dict[str, Tensor] = {}
    if impl == "linear" and hea_weight != 0 and alpha != 0:
        terms["hea"], terms["ndc"] = _hea_and_ndc(e_m, e_g, cell_graph, tau)  # the same values, one pass
    else:
        if hea_weight != 0:
            terms["hea"] = hea_loss(e_m, e_g, tau)
        if alpha != 0:
            terms["ndc"] = ndc_loss(e_m, e_g, cell_graph, tau, impl=impl)
    if beta != 0:
        terms["cvc"] = cvc_loss(z_m, z_g, cell_graph, impl=impl)
    weights = {"hea": hea_weight, "ndc": alpha, "cvc": beta}
    total = sum(weights[name] * term for name, term in terms.items())
    return {"loss": total, **terms}
