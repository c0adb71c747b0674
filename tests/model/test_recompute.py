"""recompute (activation checkpointing of the two views): the same loss and gradients bit for bit, dropout included,
and less held for the backward pass."""

from __future__ import annotations

import pytest
import torch

from scrcl.experiments.timing import saved_for_backward_bytes
from scrcl.model import Objective, ScRCL
from tests.model.test_model import tiny_batch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Step(torch.nn.Module):
    """What saved_for_backward_bytes expects of a module: ``model`` and ``objective``."""

    def __init__(self, recompute: bool):
        super().__init__()
        torch.manual_seed(0)
        self.model = ScRCL(n_cells=40, n_genes=12, gene_dim=5, hidden_dim=64, dropout=0.3, recompute=recompute,
                           mlp_dropout=True)
        self.objective = Objective(alpha=1.0, beta=1.0, tau=0.5)


def gradients(recompute: bool) -> tuple[float, dict]:
    step = Step(recompute).train()
    torch.manual_seed(7)  # the dropout masks
    loss = step.objective(step.model(tiny_batch()), tiny_batch().cell_graph)["loss"]
    loss.backward()
    return float(loss), {name: p.grad.clone() for name, p in step.model.named_parameters()}


def test_recomputed_views_give_the_same_loss_and_gradients_bit_for_bit():
    plain_loss, plain = gradients(False)
    loss, recomputed = gradients(True)
    assert loss == plain_loss
    for name, grad in plain.items():
        assert torch.equal(grad, recomputed[name]), name


def test_recompute_holds_less_for_the_backward_pass():
    batch = tiny_batch()
    plain = saved_for_backward_bytes(Step(False).train(), batch)
    recomputed = saved_for_backward_bytes(Step(True).train(), batch)
    assert recomputed < 0.8 * plain, (plain, recomputed)


def test_evaluation_is_unchanged_by_recompute():
    batch = tiny_batch()
    with torch.no_grad():
        a = ScRCL.embedding(Step(False).model.eval()(batch))
        b = ScRCL.embedding(Step(True).model.eval()(batch))
    assert torch.equal(a, b)
