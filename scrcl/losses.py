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
  with no ``N x N`` tensor. It sums large terms that cancel, so it accumulates in float64 and
  casts the final loss back to the input dtype.

Every loss is a pure function of its tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["hea_loss", "kappa_matrix", "ndc_loss", "cvc_loss", "scrcl_loss"]

_IMPLS = ("linear", "dense")


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


def _row_log_softmax_terms(e: Tensor, tau: float) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(q, log q, Σ_k q log q)`` for ``q = softmax_row(e / tau)``, all float64.

    float64 from the logits on: κ is a difference of O(log d) terms that nearly cancel when the
    two views agree, so float32 would lose most of its digits.
    """
    logq = F.log_softmax(e.double() / tau, dim=1)
    q = logq.exp()
    return q, logq, (q * logq).sum(dim=1)


# --------------------------------------------------------------------------------------------
# HEA, Eq. 3
# --------------------------------------------------------------------------------------------


def hea_loss(e_m: Tensor, e_g: Tensor, tau: float) -> Tensor:
    """Hierarchical embedding alignment loss, Eq. 3 (global + cell level, symmetric KL).

    Global level: pᵛ = softmax over all ``N·d`` entries of Ēᵛ/τ (one softmax over the flattened
    matrix), ``L_glob = KL(pᵐ‖pᵍ) + KL(pᵍ‖pᵐ)``.

    Cell level: qᵛᵢ = softmax over the ``d`` entries of row Ēᵛᵢ/τ,
    ``L_cell = ½·[mean_i KL(qᵐᵢ‖qᵍᵢ) + mean_i KL(qᵍᵢ‖qᵐᵢ)]``.

    ``L_HEA = L_glob + L_cell``, with ``KL(p‖q) = Σ p (log p − log q)``.

    Args:
        e_m, e_g: ``(N, d)`` normalised embeddings of the two views.
        tau: temperature.

    Returns:
        0-dim tensor in the input dtype.
    """
    _check_views(e_m, e_g, "e_m and e_g")
    # KL(p‖q) + KL(q‖p) = Σ (p − q)(log p − log q): one pass, log_softmax for stability.
    lp = F.log_softmax(e_m.reshape(-1) / tau, dim=0)
    lq = F.log_softmax(e_g.reshape(-1) / tau, dim=0)
    glob = ((lp.exp() - lq.exp()) * (lp - lq)).sum()

    lp = F.log_softmax(e_m / tau, dim=1)
    lq = F.log_softmax(e_g / tau, dim=1)
    # ½·[mean KL(P‖Q) + mean KL(Q‖P)] = ½·mean_i Σ_k (P − Q)(log P − log Q).
    cell = 0.5 * ((lp.exp() - lq.exp()) * (lp - lq)).sum(dim=1).mean()
    return glob + cell


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
    * positives ``Σⱼ Ãᵢⱼ κᵢⱼ = deg̃ᵢ aᵢ + (Ã b)ᵢ − Pᵢ·(Ã log Q)ᵢ − log Pᵢ·(Ã Q)ᵢ`` via one
      sparse-dense product plus the identity term.

    The linear form subtracts terms of size ~N·log d, so it works in float64 throughout and
    casts the result back to the input dtype; gradients flow through the casts.

    Args:
        e_m, e_g: ``(N, d)`` normalised embeddings, ``N >= 2``.
        cell_graph: sparse ``(N, N)`` adjacency A, symmetric, no self loops.
        tau: temperature.
        impl: ``"linear"`` or ``"dense"``.

    Returns:
        0-dim tensor in the dtype of ``e_m``.
    """
    _check_impl(impl)
    _check_views(e_m, e_g, "e_m and e_g")
    n = e_m.shape[0]
    _check_graph(cell_graph, n)
    if n < 2:
        raise ValueError(f"ndc_loss needs at least 2 cells (negatives are the other cells), got {n}")

    if impl == "dense":
        kappa = kappa_matrix(e_m, e_g, tau)
        eye = torch.eye(n, dtype=kappa.dtype, device=kappa.device)
        a_tilde = cell_graph.to_dense().to(kappa.dtype) + eye
        pos = (kappa * a_tilde).sum(dim=1) / a_tilde.sum(dim=1)
        # Masked sum rather than "all minus diagonal": the paper's form, no cancellation.
        neg = (kappa * (1.0 - eye)).sum(dim=1) / (n - 1)
        return (pos / neg).mean()

    p, logp, a = _row_log_softmax_terms(e_m, tau)
    q, logq, b = _row_log_softmax_terms(e_g, tau)
    d = q.shape[1]

    # Negatives: all-j row sum, then drop j = i.
    row_all = n * a + b.sum() - p @ logq.sum(dim=0) - logp @ q.sum(dim=0)
    kappa_diag = a + b - (p * logq).sum(dim=1) - (logp * q).sum(dim=1)
    neg = (row_all - kappa_diag) / (n - 1)

    # Positives: one sparse product gives Ã Q, Ã log Q, Ã b and deg̃ (the ones column).
    stacked = torch.cat([q, logq, b[:, None], torch.ones_like(b)[:, None]], dim=1)
    graph = cell_graph.to(device=stacked.device, dtype=stacked.dtype)
    agg = torch.sparse.mm(graph, stacked) + stacked  # + stacked is the "+ I" of Ã
    a_q, a_logq, a_b, deg_tilde = agg[:, :d], agg[:, d : 2 * d], agg[:, 2 * d], agg[:, 2 * d + 1]
    pos_sum = deg_tilde * a + a_b - (p * a_logq).sum(dim=1) - (logp * a_q).sum(dim=1)
    pos = pos_sum / deg_tilde

    return (pos / neg).mean().to(e_m.dtype)


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
    approaches Ã, so the linear form accumulates in float64 and casts back to the input dtype.

    Args:
        z_m, z_g: ``(N, c')`` normalised representations.
        cell_graph: sparse ``(N, N)`` adjacency A, symmetric, no self loops.
        impl: ``"linear"`` or ``"dense"``.

    Returns:
        0-dim tensor in the dtype of ``z_m``.
    """
    _check_impl(impl)
    _check_views(z_m, z_g, "z_m and z_g")
    n = z_m.shape[0]
    _check_graph(cell_graph, n)

    if impl == "dense":
        s = z_m @ z_g.T
        a_tilde = cell_graph.to_dense().to(s.dtype) + torch.eye(n, dtype=s.dtype, device=s.device)
        return (s - a_tilde).square().mean()

    zm, zg = z_m.double(), z_g.double()
    gram = ((zm.T @ zm) * (zg.T @ zg)).sum()  # = Σᵢⱼ Sᵢⱼ²
    graph = cell_graph.to(device=zg.device, dtype=zg.dtype)
    cross = (zm * torch.sparse.mm(graph, zg)).sum() + (zm * zg).sum()
    sq = _sparse_values(graph).square().sum() + n
    return ((gram - 2.0 * cross + sq) / (n * n)).to(z_m.dtype)


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
    (ablations).

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
    if hea_weight != 0:
        terms["hea"] = hea_loss(e_m, e_g, tau)
    if alpha != 0:
        terms["ndc"] = ndc_loss(e_m, e_g, cell_graph, tau, impl=impl)
    if beta != 0:
        terms["cvc"] = cvc_loss(z_m, z_g, cell_graph, impl=impl)
    weights = {"hea": hea_weight, "ndc": alpha, "cvc": beta}
    total = sum(weights[name] * term for name, term in terms.items())
    return {"loss": total, **terms}
