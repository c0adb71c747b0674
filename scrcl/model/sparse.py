"""Products with a constant sparse matrix (a graph's propagation matrix or adjacency), without per-step conversions.

``torch.sparse.mm(a, x)`` differentiates with respect to ``x`` by transposing ``a`` in every backward pass (a sort
of its nnz entries and a copy: on pbmc10x about a fifth of a d = 16 epoch). The graphs never change during
training, so :func:`constant_mm` uses the transpose made once and kept on the matrix (:func:`transposed`) or, for a
matrix symmetric by contract, the matrix itself.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _ConstantProduct(torch.autograd.Function):
    """a @ x with a constant sparse ``a``; the gradient with respect to x is ``a_t @ grad`` (``a_t`` = aᵀ, given)."""

    @staticmethod
    def forward(ctx, a: Tensor, a_t: Tensor, x: Tensor) -> Tensor:
        ctx.a_t = a_t
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, None, torch.sparse.mm(ctx.a_t, grad.to(ctx.a_t.dtype)) if ctx.needs_input_grad[2] else None


def transposed(a: Tensor) -> Tensor:
    """aᵀ as sparse CSR, made at the first call and kept on ``a`` itself (made again if ``a``'s values change)."""
    kept = getattr(a, "_scrcl_transposed", None)
    if kept is None or kept[0] != a.values()._version:
        kept = (a.values()._version, a.t().to_sparse_csr())
        a._scrcl_transposed = kept
    return kept[1]


def constant_mm(a: Tensor, x: Tensor, symmetric: bool = False) -> Tensor:
    """``a @ x`` for a sparse CSR ``a`` that is not trained (no gradient flows to it); ``symmetric=True`` promises aᵀ = a."""
    if a.layout != torch.sparse_csr or a.requires_grad:
        return torch.sparse.mm(a, x)
    return _ConstantProduct.apply(a, a if symmetric else transposed(a), x)
