"""Refinement by cell–gene association (docs/method.md §4, Eq. 7)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class Refinement(nn.Module):
    """Z = normalize(P(dropout(E)) · U): a projector P: R^d → R^h shared by both views maps each cell
    embedding back to gene space; multiplying by the gene embeddings U gives the refined cells.

    E (N, d), U (h, c') → Z (N, c'), rows of unit L2 norm.

    Computed as dropout(E) · (Wᵀ U) + b U — the same product, associated the other way round: it
    never forms the (N, h) gene-space matrix, so it costs O(N·d·c') instead of O(N·d·h) (with d = 1500
    and h = 2000 that was 40% of an epoch's arithmetic).
    """

    def __init__(self, hidden_dim: int, n_genes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.projector = nn.Linear(hidden_dim, n_genes)

    def forward(self, e: Tensor, u: Tensor) -> Tensor:
        cell_to_gene_embedding = self.projector.weight.t() @ u  # (d, c')
        return F.normalize(self.dropout(e) @ cell_to_gene_embedding + self.projector.bias @ u, dim=1)
