"""The LightningModule: wires a network and its objective to the optimiser and the log. It computes nothing itself.

The network (``scrcl.model.ScRCL``) and the objective (``scrcl.model.Objective``, Eq. 10) are plain modules built by
:func:`build_module`; what a run logs besides the loss (each weight matrix's scale) and keeps in its checkpoints
besides the weights (the random streams) are callbacks (``scrcl.train.callbacks``).
"""

from __future__ import annotations

import lightning as L
import torch

from scrcl.errors import TrainingDiverged
from scrcl.model import Objective, ScRCL


class ScRCLModule(L.LightningModule):
    def __init__(self, network: ScRCL, objective: Objective, lr: float = 1e-4, weight_decay: float = 0.1,
                 optimizer: str = "adam", refine: bool = True, lr_schedule: str = "constant", epochs: int = 1):
        super().__init__()
        self.model = network
        self.objective = objective
        self.save_hyperparameters(ignore=["network", "objective"])

    def forward(self, batch):
        return self.model(batch)

    def training_step(self, batch, batch_idx):
        terms = self.objective(self.model(batch), batch.cell_graph)
        if not torch.isfinite(terms["loss"]):  # one step per epoch (full-graph batch); the progress bar reads the loss each step anyway
            raise TrainingDiverged.after("loss", self.current_epoch + 1, self.hparams.lr)
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", on_step=False, on_epoch=True, batch_size=1)
        return terms["loss"]

    def configure_optimizers(self):
        """``adam``: Adam with L2 weight decay added to the gradient (the reference's optimiser).
        ``adamw``: the decay decoupled from the adaptive step (Loshchilov & Hutter); see configs/generic_sc.yaml.
        ``lr_schedule: cosine``: torch's cosine annealing to 0 over the epochs (the reference keeps lr constant)."""
        kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[self.hparams.optimizer]
        optimizer = kind(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.lr_schedule == "constant":
            return optimizer
        # cosine: lr falls from lr to 0 over the run's epochs (one step per epoch), stepped by Lightning
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(int(self.hparams.epochs), 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    @torch.no_grad()
    def embed(self, batch, network: ScRCL | None = None) -> torch.Tensor:
        """The clustered representation, in eval mode (no dropout): (N, 2c'), or (N, 2d) without refinement.
        ``network``: other weights of the same network (e.g. averaged ones); default the trained ``model``."""
        network = self.model if network is None else network
        was_training = network.training
        network.eval()
        try:
            return ScRCL.embedding(network(batch), refine=self.hparams.refine)
        finally:
            network.train(was_training)


def build_module(config: dict, n_cells: int, n_genes: int, n_clusters: int) -> ScRCLModule:
    """The LightningModule of a resolved config for data of that shape (every run, benchmark and study)."""
    network = ScRCL(n_cells, n_genes, config.get("gene_dim") or n_clusters, config["hidden_dim"], config["dropout"],
                    config.get("views", "both"), mlp_activation=config.get("mlp_activation", "relu"),
                    mlp_dropout=config.get("mlp_dropout", False), gene_input=config.get("gene_input", "smoothed"),
                    gene_activation=config.get("gene_activation", "relu"), recompute=config.get("recompute", False))
    objective = Objective(alpha=config["alpha"], beta=config["beta"], tau=config["tau"], hea_weight=config["hea_weight"],
                          impl=config["loss_impl"])
    return ScRCLModule(network, objective, lr=config["lr"], weight_decay=config["weight_decay"],
                       optimizer=config.get("optimizer", "adam"), refine=config.get("refine", True),
                       lr_schedule=config.get("lr_schedule", "constant"), epochs=config["epochs"])
