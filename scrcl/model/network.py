"""The scRCL network: two cell views, the gene network and the refinement, as one ``nn.Module``.

``forward(batch)`` returns every tensor the losses and the clustering need; it computes no loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from scrcl.model.encoders import GeneNetwork, GNNView, MLPView
from scrcl.model.refinement import Refinement

VIEWS = {"mlp": MLPView, "gnn": GNNView}


class ScRCL(nn.Module):
    """Cell views φ (MLP) and ψ (GNN), gene network, shared refinement.

    ``views``: ``both`` (the method), or ``mlp`` / ``gnn`` to use that encoder for both views (ablations). The
    defaults are the reference's network; ``mlp_activation``, ``mlp_dropout``, ``gene_input`` and ``gene_activation``
    select the project's earlier variants (see the config keys of the same names).
    """

    def __init__(self, n_cells: int, n_genes: int, gene_dim: int, hidden_dim: int = 1500, dropout: float = 0.3, views: str = "both",
                 mlp_activation: str = "relu", mlp_dropout: bool = False, gene_input: str = "smoothed",
                 gene_activation: str = "relu", recompute: bool = False):
        super().__init__()
        self.recompute = recompute  # training: the views' activations are recomputed in the backward pass
        first, second = {"both": ("mlp", "gnn"), "mlp": ("mlp", "mlp"), "gnn": ("gnn", "gnn")}[views]
        mlp = {"activation": mlp_activation, "input_dropout": mlp_dropout}
        self.view_m = VIEWS[first](n_genes, hidden_dim, dropout, **(mlp if first == "mlp" else {}))
        self.view_g = VIEWS[second](n_genes, hidden_dim, dropout, **(mlp if second == "mlp" else {}))
        self.gene_network = GeneNetwork(n_cells, gene_dim, gene_activation)
        self.refinement = Refinement(hidden_dim, n_genes, dropout)
        self.gene_input = {"smoothed": "x_mlp", "raw": "x"}[gene_input]  # which of the batch's matrices U is built from

    def forward(self, batch) -> dict[str, Tensor]:
        """batch: x (N, h), x_mlp = F^{t₁}X (N, h), x_gnn = F^{t₂}X (N, h), cell_filter (N, N), gene_filter (h, h).

        Returns e_m, e_g (N, d) row-normalised view embeddings Ēᵐ, Ēᵍ; u (h, c'); z_m, z_g (N, c').
        """
        e_m = self._view(self.view_m, batch.x_mlp, batch.cell_filter)
        e_g = self._view(self.view_g, batch.x_gnn, batch.cell_filter)
        u = self.gene_network(batch[self.gene_input], batch.gene_filter)  # the reference: the MLP view's input F^t1 X
        return {
            "e_m": F.normalize(e_m, dim=1),
            "e_g": F.normalize(e_g, dim=1),
            "u": u,
            "z_m": self.refinement(e_m, u),
            "z_g": self.refinement(e_g, u),
        }

    def _view(self, view: nn.Module, x: Tensor, cell_filter: Tensor) -> Tensor:
        """One view's embedding. With ``recompute`` (training only) torch's activation checkpointing keeps only the
        view's input and output for the backward pass and runs its forward again there, with the same dropout masks
        (the random state is saved and restored): the same gradients for about a view's forward of extra time."""
        if self.recompute and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(view, x, cell_filter, use_reentrant=False)
        return view(x, cell_filter)

    @staticmethod
    def embedding(out: dict[str, Tensor], refine: bool = True) -> Tensor:
        """What is clustered (Eq. 11): Z = [Zᵐ ‖ Zᵍ] (N, 2c'); without refinement [Ēᵐ ‖ Ēᵍ] (N, 2d)."""
        return torch.cat([out["z_m"], out["z_g"]] if refine else [out["e_m"], out["e_g"]], dim=1)
