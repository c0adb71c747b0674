"""scrcl.model.sparse: the constant-graph product equals torch.sparse.mm in value and gradient, and never transposes
the graph again after the first product."""

from __future__ import annotations

import pytest
import torch

from torch.profiler import profile

from scrcl.model import ScRCL
from scrcl.model.losses import scrcl_loss
from scrcl.model.sparse import constant_mm, transposed

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def random_csr(n: int, m: int, density: float, seed: int, symmetric: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(n, m, generator=g) * (torch.rand(n, m, generator=g) < density)
    if symmetric:
        dense = dense + dense.T
    return dense.to_sparse_csr()


@pytest.mark.parametrize("symmetric", [False, True])
def test_value_and_gradient_equal_torch_sparse_mm(symmetric):
    a = random_csr(50, 50, 0.1, 0, symmetric)
    x = torch.randn(50, 7, requires_grad=True)
    weights = torch.randn(50, 7)
    out = constant_mm(a, x, symmetric=symmetric)
    (out * weights).sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    ref = torch.sparse.mm(a, x_ref)
    (ref * weights).sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(x.grad, a.to_dense().T @ weights)


def test_rectangular_directed_matrix():
    a = random_csr(30, 40, 0.2, 1)
    x = torch.randn(40, 5, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda v: constant_mm(a.to(torch.float64), v), (x,))


def test_transpose_made_once_and_again_after_a_change():
    a = random_csr(20, 20, 0.3, 2)
    first = transposed(a)
    assert transposed(a) is first
    torch.testing.assert_close(first.to_dense(), a.to_dense().T)
    with torch.no_grad():
        a.values().mul_(2.0)
    again = transposed(a)
    assert again is not first
    torch.testing.assert_close(again.to_dense(), a.to_dense().T)


CONVERSIONS = ("aten::sort", "aten::_to_sparse_csr", "aten::_convert_indices_from_csr_to_coo", "aten::to_sparse_csr")


def conversions_in(step) -> list[str]:
    with profile() as prof:
        step()
    return sorted({event.name for event in prof.events() if event.name in CONVERSIONS})


def test_a_training_step_converts_no_graph_after_the_first():
    """The real network and objective: torch.sparse.mm would transpose each graph in every backward pass (sort,
    CSR -> COO -> CSR); after the first step no layout conversion is left."""
    from tests.model.test_model import tiny_batch

    torch.manual_seed(0)
    batch = tiny_batch()
    model = ScRCL(n_cells=40, n_genes=12, gene_dim=5, hidden_dim=16, dropout=0.2)

    def step():
        out = model(batch)
        scrcl_loss(out["e_m"], out["e_g"], out["z_m"], out["z_g"], batch.cell_graph, alpha=1.0, beta=1.0,
                   tau=0.5)["loss"].backward()

    step()
    assert conversions_in(step) == []
    x = torch.randn(40, 3, requires_grad=True)
    assert conversions_in(lambda: torch.sparse.mm(batch.cell_filter, x).sum().backward()) != []  # what it avoids
