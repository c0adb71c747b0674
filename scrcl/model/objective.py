"""The objective of Eq. 10 as a module: ``Objective(α, β, τ)(out, A)`` → ``{"loss", "hea", "ndc", "cvc"}``.

The equation itself is :func:`scrcl.model.losses.scrcl_loss`; this holds its weights, so that a training step, a
benchmark and a study all call the objective the same way (``objective(network(batch), batch.cell_graph)``).
"""

from __future__ import annotations

from torch import Tensor, nn

from scrcl.model.losses import scrcl_loss


class Objective(nn.Module):
    """L = hea_weight·L_HEA + α·L_NDC + β·L_CVC on the network's outputs (terms with weight 0 are not computed)."""

    def __init__(self, alpha: float, beta: float, tau: float, hea_weight: float = 1.0, impl: str = "linear"):
        super().__init__()
        self.alpha, self.beta, self.tau, self.hea_weight, self.impl = alpha, beta, tau, hea_weight, impl

    def forward(self, out: dict[str, Tensor], cell_graph: Tensor) -> dict[str, Tensor]:
        """``out``: the network's ``e_m, e_g`` (N, d) and ``z_m, z_g`` (N, c'); ``cell_graph``: sparse A (N, N)."""
        return scrcl_loss(out["e_m"], out["e_g"], out["z_m"], out["z_g"], cell_graph, alpha=self.alpha, beta=self.beta,
                          tau=self.tau, hea_weight=self.hea_weight, impl=self.impl)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, tau={self.tau}, hea_weight={self.hea_weight}, impl={self.impl!r}"
