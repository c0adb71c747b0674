"""The LightningModule: wires the network, the objective (Eq. 10) and Adam. It computes nothing itself."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch

from scrcl.errors import TrainingDiverged
from scrcl.losses import scrcl_loss
from scrcl.model import ScRCL


class ScRCLModule(L.LightningModule):
    def __init__(
        self,
        n_cells: int,
        n_genes: int,
        n_clusters: int,
        hidden_dim: int = 1500,
        gene_dim: int | None = None,
        dropout: float = 0.3,
        alpha: float = 100.0,
        beta: float = 1.0,
        tau: float = 0.1,
        hea_weight: float = 1.0,
        loss_impl: str = "linear",
        lr: float = 1e-4,
        weight_decay: float = 0.1,
        optimizer: str = "adam",
        views: str = "both",
        refine: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = ScRCL(n_cells, n_genes, gene_dim or n_clusters, hidden_dim, dropout, views)

    def forward(self, batch):
        return self.model(batch)

    def objective(self, batch) -> dict[str, torch.Tensor]:
        """Eq. 10 on one forward pass: ``{"loss", "hea", "ndc", "cvc"}`` (terms with weight 0 left out)."""
        hp = self.hparams
        out = self.model(batch)
        return scrcl_loss(
            out["e_m"], out["e_g"], out["z_m"], out["z_g"], batch.cell_graph,
            alpha=hp.alpha, beta=hp.beta, tau=hp.tau, hea_weight=hp.hea_weight, impl=hp.loss_impl,
        )

    def training_step(self, batch, batch_idx):
        hp = self.hparams
        terms = self.objective(batch)
        if not torch.isfinite(terms["loss"]):  # one step per epoch (full-graph batch); the progress bar reads the loss each step anyway
            raise TrainingDiverged.after("loss", self.current_epoch + 1, hp.lr)
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", on_step=False, on_epoch=True, batch_size=1)
        return terms["loss"]

    def on_train_epoch_end(self):
        """Log each weight matrix's root-mean-square as ``weights/rms_<layer>``. Without labels it shows
        what Adam's L2 decay does over a long run: it empties the weights toward zero at about lr per step
        (benchmarks/results/stability.md), which the loss curve does not show."""
        for name, param in self.model.named_parameters():
            if param.dim() == 2:
                self.log(f"weights/rms_{name.removesuffix('.weight')}", param.detach().pow(2).mean().sqrt(),
                         on_step=False, on_epoch=True, batch_size=1)

    def configure_optimizers(self):
        """``adam``: Adam with L2 weight decay added to the gradient (the reference's optimiser).
        ``adamw``: the decay decoupled from the adaptive step (Loshchilov & Hutter); see configs/generic_sc.yaml."""
        kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[self.hparams.optimizer]
        return kind(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    @torch.no_grad()
    def embed(self, batch) -> torch.Tensor:
        """The clustered representation, in eval mode (no dropout): (N, 2c'), or (N, 2d) without refinement."""
        was_training = self.training
        self.eval()
        try:
            return ScRCL.embedding(self.model(batch), refine=self.hparams.refine)
        finally:
            self.train(was_training)

    # A resumed run must continue with the same random stream (dropout), or it would not end where an
    # uninterrupted run ends: Lightning restores weights and optimiser, not the generators.
    def on_save_checkpoint(self, checkpoint):
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["rng"] = {  # plain tensors and numbers, so the checkpoint loads with weights_only=True
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint):
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            state = rng["numpy"]
            np.random.set_state(("MT19937", state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"]))
            random.setstate(rng["python"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
