"""The three encoders (docs/method.md §3): MLP view φ (Eq. 1), GNN view ψ (Eq. 1), gene network (Eq. 6).

Plain ``nn.Module``s. Graph inputs are pre-normalised sparse CSR propagation matrices
F = D̃^{-1/2}(A + I)D̃^{-1/2}, so PyG's ``GCNConv`` runs with ``normalize=False`` as one sparse
matrix product per layer (on CPU about 4x faster than message passing over ``edge_index``).
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.nn import GCNConv

from scrcl.model.sparse import constant_mm


@contextmanager
def _generated_code_removed():
    """PyG writes each layer class's generated ``propagate`` module to the system's temporary directory and never
    deletes it (one file per process and class). The module is imported at once, so it is written to a private
    directory here that is removed as soon as the layer exists."""
    try:
        private = tempfile.mkdtemp(prefix="scrcl-pyg-")
    except OSError:  # no usable temporary directory: PyG needs none if this class's module exists already
        yield
        return
    previous, tempfile.tempdir = tempfile.tempdir, private
    try:
        yield
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(private, ignore_errors=True)


class SparseGCNConv(GCNConv):
    """PyG's ``GCNConv`` over a pre-normalised sparse propagation matrix (``normalize=False``).

    The sparse product runs in the matrix's dtype (float32). Under mixed precision (``--precision
    bf16-mixed``) the layer's dense product comes out in bfloat16, and the CPU's sparse kernels have no
    bfloat16 or float16 version; the sparse product is ~10% of an epoch's arithmetic, so it stays in float32
    while the dense products run in the low precision.
    """

    def __init__(self, *args, **kwargs):
        with _generated_code_removed():
            super().__init__(*args, **kwargs)

    def message_and_aggregate(self, adj_t, x: Tensor) -> Tensor:
        if not (isinstance(adj_t, Tensor) and adj_t.layout == torch.sparse_csr):  # PyG's other adjacency types
            return super().message_and_aggregate(adj_t, x)
        # the graph is constant: its transpose for the backward pass is made once (scrcl.model.sparse)
        if not torch.is_autocast_enabled(x.device.type):
            return constant_mm(adj_t, x)
        with torch.autocast(x.device.type, enabled=False):  # autocast would cast the sparse operand down too
            return constant_mm(adj_t, x.to(adj_t.dtype))


ACTIVATIONS = {"relu": F.relu, "leaky_relu": F.leaky_relu}


class MLPView(nn.Module):
    """φ: Eᵐ = ReLU(W₁ X¹). (N, h) → (N, d).

    The reference builds its MLP encoder with its defaults: ReLU and no dropout. ``activation="leaky_relu"`` with
    ``input_dropout=True`` is the project's earlier view, LeakyReLU(W₁ dropout(X¹)) (config keys ``mlp_activation``,
    ``mlp_dropout``)."""

    def __init__(self, n_genes: int, hidden_dim: int, dropout: float = 0.0, activation: str = "relu", input_dropout: bool = False):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if input_dropout else None
        self.linear = nn.Linear(n_genes, hidden_dim)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: Tensor, cell_filter: Tensor | None = None) -> Tensor:
        return self.activation(self.linear(self.dropout(x) if self.dropout is not None else x))


class GNNView(nn.Module):
    """ψ: two GCN layers over the cell graph (h→d→d, LeakyReLU), dropout, Linear d→d + LeakyReLU.

    (N, h) and F (N, N) → Eᵍ (N, d).
    """

    def __init__(self, n_genes: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.conv1 = SparseGCNConv(n_genes, hidden_dim, normalize=False)
        self.conv2 = SparseGCNConv(hidden_dim, hidden_dim, normalize=False)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x: Tensor, cell_filter: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv1(x, cell_filter))
        h = F.leaky_relu(self.conv2(h, cell_filter))
        return F.leaky_relu(self.linear(self.dropout(h)))


class GeneNetwork(nn.Module):
    """Eq. 6: U = ReLU(GCN_G((X¹)ᵀ)). (X¹)ᵀ (h, N) and F_G (h, h) → U (h, c').

    As the reference, the input is the MLP view's input X¹ = F^{t₁}X transposed (each gene's values over the N
    cells), propagated over the directed gene graph (``gene_filter`` row j gathers from the genes i → j); which
    matrix is passed is the network's choice (config key ``gene_input``). ``activation="leaky_relu"`` is the
    project's earlier choice (``gene_activation``). The input width is the number of cells N: the model is
    transductive (one dataset per model).
    """

    def __init__(self, n_cells: int, gene_dim: int, activation: str = "relu"):
        super().__init__()
        self.conv = SparseGCNConv(n_cells, gene_dim, normalize=False)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: Tensor, gene_filter: Tensor) -> Tensor:
        return self.activation(self.conv(self._transposed(x), gene_filter))

    def _transposed(self, x: Tensor) -> Tensor:
        """xᵀ as a contiguous (h, N) matrix, made once: the input is the same every epoch (full-graph training), and
        a dense product over a transposed view is slower than over a copy. Made again if another input comes."""
        key = (x.data_ptr(), tuple(x.shape), x.dtype, x.device, x._version, torch.is_grad_enabled() and x.requires_grad)
        if getattr(self, "_cache_key", None) != key:
            self._cache_key, self._cache = key, x.t().contiguous()
        return self._cache
