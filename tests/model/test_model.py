"""The network: shapes, gradient flow to every parameter, the refinement's algebra."""

import pytest
import numpy as np
import torch
from torch.nn import functional as F
from torch_geometric.data import Data
from torch_geometric.nn import GCNConv

from datamodules.datamodule import to_torch_csr
from datamodules.graphs import gene_graph, normalized_adjacency, spatial_graph
from scrcl.model.encoders import SparseGCNConv
from scrcl.model.losses import scrcl_loss
from scrcl.model import ScRCL
from scrcl.model.refinement import Refinement


def tiny_batch(n=40, h=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.poisson(1.0, size=(n, h)).astype(np.float32)
    cell = spatial_graph(rng.normal(size=(n, 3)), 4)
    gene = gene_graph(x, 4).T
    xt = torch.from_numpy(x)
    return Data(
        x=xt, x_mlp=xt, x_gnn=xt,
        cell_graph=to_torch_csr(cell),
        cell_filter=to_torch_csr(normalized_adjacency(cell)),
        gene_filter=to_torch_csr(normalized_adjacency(gene)),
        num_nodes=n,
    )


@pytest.mark.parametrize("views", ["both", "mlp", "gnn"])
def test_forward_shapes_and_unit_rows(views):
    batch = tiny_batch()
    model = ScRCL(n_cells=40, n_genes=12, gene_dim=5, hidden_dim=16, dropout=0.2, views=views)
    out = model(batch)
    assert out["e_m"].shape == out["e_g"].shape == (40, 16)
    assert out["u"].shape == (12, 5)
    assert out["z_m"].shape == out["z_g"].shape == (40, 5)
    for key in ("e_m", "e_g", "z_m", "z_g"):
        norms = out[key].norm(dim=1)
        assert torch.allclose(norms[norms > 0], torch.ones_like(norms[norms > 0]), atol=1e-5)
    assert ScRCL.embedding(out).shape == (40, 10)
    assert ScRCL.embedding(out, refine=False).shape == (40, 32)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    batch = tiny_batch()
    model = ScRCL(n_cells=40, n_genes=12, gene_dim=5, hidden_dim=16, dropout=0.0)
    out = model(batch)
    loss = scrcl_loss(out["e_m"], out["e_g"], out["z_m"], out["z_g"], batch.cell_graph, alpha=1.0, beta=1.0, tau=0.5)["loss"]
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_refinement_equals_projecting_to_gene_space_first():
    """Eq. 7 as written, normalize(P(E)·U), against the cheaper association used in the code."""
    torch.manual_seed(1)
    refine = Refinement(hidden_dim=7, n_genes=9, dropout=0.0)
    e, u = torch.randn(11, 7, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)
    refine = refine.double()
    expected = F.normalize(refine.projector(e) @ u, dim=1)
    assert torch.allclose(refine(e, u), expected, atol=1e-12)


def test_gcn_view_propagates_over_the_cell_graph():
    """The GNN view must mix neighbours: changing one cell's input changes its neighbours' embeddings."""
    torch.manual_seed(0)
    batch = tiny_batch()
    model = ScRCL(n_cells=40, n_genes=12, gene_dim=5, hidden_dim=16, dropout=0.0).eval()
    base = model(batch)["e_g"].detach()
    x2 = batch.x.clone()
    x2[0] += 5.0
    moved = Data(**{**batch.to_dict(), "x_gnn": x2})
    changed = (model(moved)["e_g"].detach() - base).abs().sum(dim=1) > 1e-6
    neighbours = batch.cell_graph.to_dense()[0].nonzero().ravel()
    assert changed[0] and changed[neighbours].all()
    far = [i for i in range(40) if i != 0 and i not in set(neighbours.tolist())]
    # two GCN layers reach neighbours of neighbours only
    two_hop = (batch.cell_graph.to_dense() @ batch.cell_graph.to_dense())[0] > 0
    unreachable = [i for i in far if not two_hop[i]]
    assert unreachable and not changed[unreachable].any()


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_optimizer_choice_decays_weights_as_named(kind):
    """adam adds wd·w to the gradient (Adam's step then normalises it away); adamw shrinks w by lr·wd·w."""
    from scrcl.model import Objective
    from scrcl.train.module import ScRCLModule

    network = ScRCL(n_cells=5, n_genes=4, gene_dim=2, hidden_dim=3)
    module = ScRCLModule(network, Objective(alpha=1.0, beta=1.0, tau=0.5), lr=0.01, weight_decay=0.1, optimizer=kind)
    opt = module.configure_optimizers()
    assert type(opt) is {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    w = module.model.view_m.linear.weight
    before = w.detach().clone()
    for p in module.parameters():
        p.grad = torch.zeros_like(p)  # no loss gradient: only the decay acts
    opt.step()
    step = (before - w.detach()).abs()
    if kind == "adam":  # normalised step: every non-zero weight moves by ≈ lr, however small it is
        assert torch.allclose(step, torch.full_like(step, 0.01), atol=1e-4)
    else:  # decoupled: proportional to the weight
        assert torch.allclose(step, before.abs() * 0.01 * 0.1, atol=1e-7)


def test_forward_and_backward_under_bfloat16_autocast_on_cpu():
    """``--precision bf16-mixed`` on the CPU: the dense products run in bfloat16, the GCN layers' sparse
    products in float32 (the CPU has no bfloat16 sparse kernel; this used to stop with a NotImplementedError),
    and every parameter gets a finite gradient from the float32 objective."""
    torch.manual_seed(0)
    batch = tiny_batch()
    model = ScRCL(n_cells=40, n_genes=12, gene_dim=5, hidden_dim=16, dropout=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        loss = scrcl_loss(out["e_m"], out["e_g"], out["z_m"], out["z_g"], batch.cell_graph, alpha=1.0, beta=1.0, tau=0.5)["loss"]
    assert out["e_m"].dtype == torch.bfloat16  # the autocast really ran the layers in low precision
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name



def test_sparse_gcn_conv_outside_autocast_is_pygs_gcn_conv():
    """Outside autocast the layer is PyG's GCNConv, bit for bit: the float32 path the tables were measured on
    is unchanged."""
    torch.manual_seed(0)
    batch = tiny_batch()
    ours = SparseGCNConv(12, 8, normalize=False)
    theirs = GCNConv(12, 8, normalize=False)
    theirs.load_state_dict(ours.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ours(batch.x, batch.cell_filter), theirs(batch.x, batch.cell_filter), rtol=0, atol=0)
