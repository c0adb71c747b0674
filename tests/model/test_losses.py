"""Tests for scrcl.model.losses: brute force from the equations, linear == dense, objective wiring."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import scrcl.model.losses as losses
from scrcl.model.losses import cvc_loss, hea_loss, kappa_matrix, ndc_loss, scrcl_loss

# torch warns on every CSR construction; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")

IMPLS = ("linear", "dense")
TAUS = (0.1, 1.0)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def random_graph(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """Dense symmetric binary adjacency, no self loops, node 0 isolated."""
    upper = (torch.rand(n, n, generator=gen) < p).triu(diagonal=1)
    adj = (upper | upper.T).double()
    adj[0, :] = 0.0
    adj[:, 0] = 0.0
    assert adj.sum() > 0
    return adj


def knn_like_graph(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """k random neighbours per cell, symmetrised, binary, no self loops (dense float32)."""
    rows = torch.arange(n).repeat_interleave(k)
    cols = torch.randint(0, n, (n * k,), generator=gen)
    adj = torch.zeros(n, n)
    adj[rows, cols] = 1.0
    adj = torch.maximum(adj, adj.T)
    adj.fill_diagonal_(0.0)
    return adj


def csr(adj: torch.Tensor) -> torch.Tensor:
    return adj.float().to_sparse_csr()


def unit_rows(n: int, d: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=gen, dtype=dtype), dim=1)


@pytest.fixture
def small():
    """N = 7, d = 5, c' = 4, float64, graph with an isolated node."""
    gen = torch.Generator().manual_seed(1234)
    n, d, c = 7, 5, 4
    adj = random_graph(n, 0.5, gen)
    return {
        "e_m": unit_rows(n, d, gen),
        "e_g": unit_rows(n, d, gen),
        "z_m": unit_rows(n, c, gen),
        "z_g": unit_rows(n, c, gen),
        "adj": adj,
        "graph": csr(adj),
    }


# --------------------------------------------------------------------------------------------
# Brute force, written from the equations with Python floats only
# --------------------------------------------------------------------------------------------


def bf_softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    ex = [math.exp(x - m) for x in xs]
    s = sum(ex)
    return [v / s for v in ex]


def bf_kl(p: list[float], q: list[float]) -> float:
    return sum(pk * (math.log(pk) - math.log(qk)) for pk, qk in zip(p, q))


def bf_hea(e_m: list[list[float]], e_g: list[list[float]], tau: float) -> float:
    pm = bf_softmax([x / tau for row in e_m for x in row])
    pg = bf_softmax([x / tau for row in e_g for x in row])
    glob = bf_kl(pm, pg) + bf_kl(pg, pm)
    n = len(e_m)
    qm = [bf_softmax([x / tau for x in row]) for row in e_m]
    qg = [bf_softmax([x / tau for x in row]) for row in e_g]
    cell = 0.5 * (
        sum(bf_kl(qm[i], qg[i]) for i in range(n)) / n + sum(bf_kl(qg[i], qm[i]) for i in range(n)) / n
    )
    return glob + cell


def bf_kappa(e_m, e_g, tau) -> list[list[float]]:
    qm = [bf_softmax([x / tau for x in row]) for row in e_m]
    qg = [bf_softmax([x / tau for x in row]) for row in e_g]
    n = len(e_m)
    return [[bf_kl(qm[i], qg[j]) + bf_kl(qg[j], qm[i]) for j in range(n)] for i in range(n)]


def bf_ndc(e_m, e_g, adj: list[list[float]], tau) -> float:
    kappa = bf_kappa(e_m, e_g, tau)
    n = len(e_m)
    total = 0.0
    for i in range(n):
        positives = [j for j in range(n) if adj[i][j] != 0.0] + [i]
        pos = sum(kappa[i][j] for j in positives) / len(positives)
        neg = sum(kappa[i][j] for j in range(n) if j != i) / (n - 1)
        total += pos / neg
    return total / n


def bf_cvc(z_m, z_g, adj) -> float:
    n = len(z_m)
    total = 0.0
    for i in range(n):
        for j in range(n):
            dot = sum(a * b for a, b in zip(z_m[i], z_g[j]))
            norm_i = math.sqrt(sum(a * a for a in z_m[i]))
            norm_j = math.sqrt(sum(b * b for b in z_g[j]))
            s_ij = dot / (norm_i * norm_j)
            a_tilde = adj[i][j] + (1.0 if i == j else 0.0)
            total += (s_ij - a_tilde) ** 2
    return total / (n * n)


def close(actual: float, expected: float, tol: float = 1e-6) -> bool:
    return abs(actual - expected) <= tol * max(1.0, abs(expected))


# --------------------------------------------------------------------------------------------
# 1 + 5. Against brute force (both temperatures)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", TAUS)
def test_hea_matches_bruteforce(small, tau):
    got = hea_loss(small["e_m"], small["e_g"], tau).item()
    want = bf_hea(small["e_m"].tolist(), small["e_g"].tolist(), tau)
    assert close(got, want), (got, want)


@pytest.mark.parametrize("tau", TAUS)
def test_kappa_matches_bruteforce(small, tau):
    got = kappa_matrix(small["e_m"], small["e_g"], tau)
    want = torch.tensor(bf_kappa(small["e_m"].tolist(), small["e_g"].tolist(), tau), dtype=torch.float64)
    assert got.shape == (7, 7)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # Eq. 5 is not symmetric in (i, j): row = MLP view, column = GNN view.
    assert not torch.allclose(got, got.T)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("tau", TAUS)
def test_ndc_matches_bruteforce(small, impl, tau):
    got = ndc_loss(small["e_m"], small["e_g"], small["graph"], tau, impl=impl)
    want = bf_ndc(small["e_m"].tolist(), small["e_g"].tolist(), small["adj"].tolist(), tau)
    assert got.dtype == torch.float64
    assert close(got.item(), want), (got.item(), want)


@pytest.mark.parametrize("impl", IMPLS)
def test_cvc_matches_bruteforce(small, impl):
    got = cvc_loss(small["z_m"], small["z_g"], small["graph"], impl=impl)
    want = bf_cvc(small["z_m"].tolist(), small["z_g"].tolist(), small["adj"].tolist())
    assert got.dtype == torch.float64
    assert close(got.item(), want), (got.item(), want)


def test_temperature_changes_losses(small):
    # The brute-force tests pin each tau; here just make sure tau is actually used.
    e_m, e_g, g = small["e_m"], small["e_g"], small["graph"]
    assert not close(hea_loss(e_m, e_g, 0.1).item(), hea_loss(e_m, e_g, 1.0).item(), 1e-3)
    assert not close(ndc_loss(e_m, e_g, g, 0.1).item(), ndc_loss(e_m, e_g, g, 1.0).item(), 1e-3)


# --------------------------------------------------------------------------------------------
# 2. Linear == dense, values and gradients, float32
# --------------------------------------------------------------------------------------------


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("n", [7, 300, 2000])
def test_linear_matches_dense_float32(n):
    gen = torch.Generator().manual_seed(n)
    d, c, tau = 64, 16, 0.5
    adj = random_graph(n, 0.4, gen).float() if n == 7 else knn_like_graph(n, 10, gen)
    graph = csr(adj)
    raw = [torch.randn(n, k, generator=gen, requires_grad=True) for k in (d, d, c, c)]

    results = {}
    for impl in IMPLS:
        e_m, e_g, z_m, z_g = (F.normalize(x, dim=1) for x in raw)
        ndc = ndc_loss(e_m, e_g, graph, tau, impl=impl)
        cvc = cvc_loss(z_m, z_g, graph, impl=impl)
        assert ndc.dtype == cvc.dtype == torch.float32
        g_ndc = torch.autograd.grad(ndc, raw[:2])
        g_cvc = torch.autograd.grad(cvc, raw[2:])
        results[impl] = (ndc, cvc, g_ndc, g_cvc)

    lin, den = results["linear"], results["dense"]
    assert rel_err(lin[0], den[0]) <= 1e-4
    assert rel_err(lin[1], den[1]) <= 1e-4
    for a, b in zip(lin[2] + lin[3], den[2] + den[3]):
        assert b.abs().max() > 0
        assert rel_err(a, b) <= 1e-4


@pytest.fixture(scope="module")
def pbmc10x_cells(data_dir):
    """The real pbmc10x cells (4271 x 2000 counts, 8 annotated types) as read from the data directory."""
    from datamodules.loading import load_dataset

    return load_dataset("pbmc10x", data_dir, progress=False).adata


def real_subset_batch(adata, n: int):
    """``n`` real cells (fixed draw), preprocessed and graphed by the DataModule (generic settings)."""
    from datamodules.datamodule import ScRCLDataModule

    picked = np.sort(np.random.default_rng(n).choice(adata.n_obs, n, replace=False))
    datamodule = ScRCLDataModule(adata=adata[picked].copy(), n_clusters=4, input="lognorm", tms=(2, 0),
                                 k=min(15, n - 1), gene_k=5, cache=False, progress=False)
    datamodule.setup("fit")
    return datamodule.batch


@pytest.mark.parametrize("n", [7, 300, 2000])
def test_linear_matches_dense_on_real_cells_every_parameter(pbmc10x_cells, n):
    """The whole network on real pbmc10x cells, paper settings (d = 1500, τ = 0.1, α = 100), after a few Adam steps
    (so the views have started to align, where the linear form cancels most): the linear form in float32 gives the
    objective's terms and the gradient of every parameter of the exact answer (the dense form, network and all, in
    float64) to 1e-4, or at least as closely as the dense form does in float32.

    At N = 7 the comparison is made at initialisation: there the network's own float32 backward pass alone moves
    the smallest gradients by ~1e-4, so the float32 dense form is no closer (1.4e-4 on the MLP view's weight, where
    the linear form is 2.7e-5 away).
    """
    from scrcl.model import ScRCL

    batch = real_subset_batch(pbmc10x_cells, n)
    torch.manual_seed(0)
    model = ScRCL(n_cells=n, n_genes=batch.x.shape[1], gene_dim=4, hidden_dim=1500, dropout=0.0)
    weights = {"alpha": 100.0, "beta": 1.0, "tau": 0.1}

    def objective(net, data, impl: str) -> dict:
        out = net(data)
        return scrcl_loss(out["e_m"], out["e_g"], out["z_m"], out["z_g"], data.cell_graph, impl=impl, **weights)

    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3 if n >= 100 else 0):
        optimiser.zero_grad()
        objective(model, batch, "linear")["loss"].backward()
        optimiser.step()

    exact_model, exact_batch = copy.deepcopy(model).double(), batch.clone()
    for key in ("x", "x_mlp", "x_gnn", "cell_graph", "cell_filter", "gene_filter"):
        exact_batch[key] = exact_batch[key].to(torch.float64)
    results = {}
    for name, (net, data, impl) in {"linear": (model, batch, "linear"), "dense": (model, batch, "dense"),
                                     "exact": (exact_model, exact_batch, "dense")}.items():
        net.zero_grad()
        terms = objective(net, data, impl)
        terms["loss"].backward()
        results[name] = ({k: v.detach().double() for k, v in terms.items()},
                         {key: p.grad.double().clone() for key, p in net.named_parameters()})
    (lin_terms, lin_grads), (den_terms, den_grads), (ex_terms, ex_grads) = results["linear"], results["dense"], results["exact"]
    for key in ("loss", "hea", "ndc", "cvc"):
        assert rel_err(lin_terms[key], ex_terms[key]) <= max(1e-4, rel_err(den_terms[key], ex_terms[key])), key
    assert len(lin_grads) == len(list(model.parameters())) >= 10
    for name, grad in lin_grads.items():
        assert ex_grads[name].abs().max() > 0, name
        error, dense_error = rel_err(grad, ex_grads[name]), rel_err(den_grads[name], ex_grads[name])
        assert error <= max(1e-4, dense_error), (name, error, dense_error)

    # Against the paper's form in float64 on the same float32 embeddings, linear NDC is exact to
    # float32 rounding (the float32 paper form itself is ~100x further off once the views align).
    with torch.no_grad():
        out = model(batch)
        ref = ndc_loss(out["e_m"].double(), out["e_g"].double(), batch.cell_graph, weights["tau"], impl="dense")
    assert rel_err(lin_terms["ndc"].double(), ref) <= 1e-6


def test_linear_is_float64_accurate_for_float32_inputs():
    # The linear NDC subtracts terms of size ~N·log d; accumulated in float32 its gradient error
    # at N = 2000, tau = 1 is ~5e-5. With float64 accumulation it matches a float64 reference
    # to float32 rounding.
    gen = torch.Generator().manual_seed(7)
    n, d, tau = 2000, 64, 1.0
    graph = csr(knn_like_graph(n, 10, gen))
    raw = [torch.randn(n, d, generator=gen, requires_grad=True) for _ in range(2)]
    e_m, e_g = (F.normalize(x, dim=1) for x in raw)

    ref = ndc_loss(e_m.double(), e_g.double(), graph, tau, impl="dense")
    g_ref = torch.autograd.grad(ref, raw, retain_graph=True)
    got = ndc_loss(e_m, e_g, graph, tau, impl="linear")
    g_got = torch.autograd.grad(got, raw)

    assert rel_err(got.double(), ref) <= 1e-6
    for a, b in zip(g_got, g_ref):
        assert rel_err(a, b) <= 1e-6


class _LargestDenseTensor(TorchDispatchMode):
    """Records the largest strided tensor produced by any op."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.largest = max(self.largest, t.numel())
        return out


def test_linear_never_builds_n_by_n():
    gen = torch.Generator().manual_seed(3)
    n, d, c = 300, 8, 4
    graph = csr(knn_like_graph(n, 5, gen))
    raw = [torch.randn(n, k, generator=gen, requires_grad=True) for k in (d, d, c, c)]

    def largest(impl: str) -> int:
        with _LargestDenseTensor() as mode:
            e_m, e_g, z_m, z_g = (F.normalize(x, dim=1) for x in raw)
            out = scrcl_loss(e_m, e_g, z_m, z_g, graph, alpha=1.0, beta=1.0, tau=0.5, impl=impl)
            out["loss"].backward()
        return mode.largest

    assert largest("dense") >= n * n  # the probe does see N x N tensors
    assert largest("linear") < n * n


# --------------------------------------------------------------------------------------------
# 3. Objective
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_scrcl_loss_is_weighted_sum(small, impl):
    args = (small["e_m"], small["e_g"], small["z_m"], small["z_g"], small["graph"])
    out = scrcl_loss(*args, alpha=0.7, beta=1.3, tau=0.5, hea_weight=0.4, impl=impl)
    assert set(out) == {"loss", "hea", "ndc", "cvc"}
    hea = hea_loss(small["e_m"], small["e_g"], 0.5)
    ndc = ndc_loss(small["e_m"], small["e_g"], small["graph"], 0.5, impl=impl)
    cvc = cvc_loss(small["z_m"], small["z_g"], small["graph"], impl=impl)
    torch.testing.assert_close(out["hea"], hea)
    torch.testing.assert_close(out["ndc"], ndc)
    torch.testing.assert_close(out["cvc"], cvc)
    torch.testing.assert_close(out["loss"], 0.4 * hea + 0.7 * ndc + 1.3 * cvc)


@pytest.mark.parametrize("dropped", ["hea", "ndc", "cvc"])
def test_zero_weight_drops_and_skips_term(small, monkeypatch, dropped):
    fn_name = {"hea": "hea_loss", "ndc": "ndc_loss", "cvc": "cvc_loss"}[dropped]

    def must_not_run(*args, **kwargs):
        raise AssertionError(f"{fn_name} computed although its weight is 0")

    monkeypatch.setattr(losses, fn_name, must_not_run)
    weights = {"hea_weight": 1.0, "alpha": 0.5, "beta": 2.0}
    weights[{"hea": "hea_weight", "ndc": "alpha", "cvc": "beta"}[dropped]] = 0.0
    args = (small["e_m"], small["e_g"], small["z_m"], small["z_g"], small["graph"])
    out = scrcl_loss(*args, tau=0.5, **weights)

    assert dropped not in out
    kept = {"hea", "ndc", "cvc"} - {dropped}
    assert set(out) == {"loss"} | kept
    w = {"hea": weights["hea_weight"], "ndc": weights["alpha"], "cvc": weights["beta"]}
    torch.testing.assert_close(out["loss"], sum(w[k] * out[k] for k in kept))


def test_all_zero_weights_raise(small):
    args = (small["e_m"], small["e_g"], small["z_m"], small["z_g"], small["graph"])
    with pytest.raises(ValueError):
        scrcl_loss(*args, alpha=0.0, beta=0.0, tau=0.5, hea_weight=0.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_graph_without_edges(small, impl):
    n = small["e_m"].shape[0]
    empty_adj = torch.zeros(n, n, dtype=torch.float64)
    empty = csr(empty_adj)
    assert empty.values().numel() == 0
    raw = [x.clone().requires_grad_(True) for x in (small["e_m"], small["e_g"], small["z_m"], small["z_g"])]
    e_m, e_g, z_m, z_g = (F.normalize(x, dim=1) for x in raw)
    out = scrcl_loss(e_m, e_g, z_m, z_g, empty, alpha=1.0, beta=1.0, tau=0.5, impl=impl)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(torch.isfinite(x.grad).all() for x in raw)

    lists = [t.tolist() for t in (small["e_m"], small["e_g"], small["z_m"], small["z_g"])]
    assert close(out["ndc"].item(), bf_ndc(lists[0], lists[1], empty_adj.tolist(), 0.5))
    assert close(out["cvc"].item(), bf_cvc(lists[2], lists[3], empty_adj.tolist()))


# --------------------------------------------------------------------------------------------
# 4. Identical views
# --------------------------------------------------------------------------------------------


def test_identical_views_give_zero_hea_and_zero_kappa_diagonal():
    gen = torch.Generator().manual_seed(5)
    e = unit_rows(50, 16, gen)
    assert hea_loss(e, e.clone(), 0.5).item() == pytest.approx(0.0, abs=1e-12)
    kappa = kappa_matrix(e, e.clone(), 0.5)
    torch.testing.assert_close(kappa.diagonal(), torch.zeros(50, dtype=torch.float64), rtol=0, atol=1e-12)
    off = kappa[~torch.eye(50, dtype=torch.bool)]
    assert (off > 1e-6).all()
    # Identical views: κ is symmetric (KL terms swap).
    torch.testing.assert_close(kappa, kappa.T, rtol=0, atol=1e-12)
    # Distinct views do not give zero.
    assert hea_loss(e, unit_rows(50, 16, gen), 0.5).item() > 1e-3


# --------------------------------------------------------------------------------------------
# 6. Bad impl
# --------------------------------------------------------------------------------------------


def test_unknown_impl_raises(small):
    e_m, e_g, z_m, z_g, g = small["e_m"], small["e_g"], small["z_m"], small["z_g"], small["graph"]
    with pytest.raises(ValueError, match="impl"):
        ndc_loss(e_m, e_g, g, 0.5, impl="sparse")
    with pytest.raises(ValueError, match="impl"):
        cvc_loss(z_m, z_g, g, impl="sparse")
    with pytest.raises(ValueError, match="impl"):
        scrcl_loss(e_m, e_g, z_m, z_g, g, alpha=1.0, beta=1.0, tau=0.5, impl="Linear")
    # Validated even when the terms that use impl are switched off.
    with pytest.raises(ValueError, match="impl"):
        scrcl_loss(e_m, e_g, z_m, z_g, g, alpha=0.0, beta=0.0, tau=0.5, impl="sparse")


# --------------------------------------------------------------------------------------------
# 7. The objective's one-pass HEA + NDC
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_objective_one_pass_matches_separate_terms(dtype):
    """scrcl_loss computes HEA and NDC in one pass in linear mode: the same values and gradients as
    hea_loss and ndc_loss called one by one."""
    gen = torch.Generator().manual_seed(11)
    n, d, c = 300, 64, 6
    graph = csr(knn_like_graph(n, 8, gen))
    raw = [torch.randn(n, k, generator=gen, dtype=dtype, requires_grad=True) for k in (d, d, c, c)]
    tol = 1e-5 if dtype == torch.float32 else 1e-12

    e_m, e_g, z_m, z_g = (F.normalize(x, dim=1) for x in raw)
    out = scrcl_loss(e_m, e_g, z_m, z_g, graph, alpha=100.0, beta=1.0, tau=0.1)
    g_fused = torch.autograd.grad(out["loss"], raw)

    e_m, e_g, z_m, z_g = (F.normalize(x, dim=1) for x in raw)
    hea, ndc, cvc = hea_loss(e_m, e_g, 0.1), ndc_loss(e_m, e_g, graph, 0.1), cvc_loss(z_m, z_g, graph)
    g_separate = torch.autograd.grad(hea + 100.0 * ndc + cvc, raw)

    assert rel_err(out["hea"], hea) <= tol and rel_err(out["ndc"], ndc) <= tol
    for a, b in zip(g_fused, g_separate):
        assert rel_err(a, b) <= tol


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_float64(small, impl):
    """Finite differences against the hand-written backward passes (linear) and autograd (dense),
    for every term of the objective, float64, both temperatures' worth of curvature (τ = 0.5)."""
    inputs = tuple(small[k].clone().requires_grad_(True) for k in ("e_m", "e_g", "z_m", "z_g"))
    graph = small["graph"].to(torch.float64)

    def terms(e_m, e_g, z_m, z_g):
        out = scrcl_loss(e_m, e_g, z_m, z_g, graph, alpha=0.7, beta=1.3, tau=0.5, hea_weight=0.4, impl=impl)
        return out["hea"], out["ndc"], out["cvc"]

    assert torch.autograd.gradcheck(terms, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradcheck(lambda a, b: hea_loss(a, b, 0.5), inputs[:2], eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradcheck(lambda a, b: ndc_loss(a, b, graph, 0.5, impl=impl), inputs[:2], eps=1e-6, atol=1e-7, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Mixed precision (``--precision bf16-mixed``): bfloat16 embeddings in, float32 losses out
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_half_precision_inputs_give_float32_losses_of_the_same_values(impl):
    """Under mixed precision the encoders hand the losses bfloat16 embeddings. Each loss then returns
    float32 (bfloat16 would keep ~3 digits of the objective and of its logged terms), equal to the loss of
    the same (bfloat16-rounded) values in float32, autocast on or off, and its gradients come back in
    bfloat16, one per input."""
    gen = torch.Generator().manual_seed(21)
    n, d, c = 200, 48, 5
    graph = csr(knn_like_graph(n, 6, gen))
    raw = [torch.randn(n, k, generator=gen) for k in (d, d, c, c)]
    half = [F.normalize(x, dim=1).to(torch.bfloat16).requires_grad_() for x in raw]
    full = [x.detach().float() for x in half]
    expected = scrcl_loss(*full, graph, alpha=100.0, beta=1.0, tau=0.1, impl=impl)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = scrcl_loss(*half, graph, alpha=100.0, beta=1.0, tau=0.1, impl=impl)
    for name in ("loss", "hea", "ndc", "cvc"):
        assert got[name].dtype == torch.float32, name
        assert rel_err(got[name], expected[name]) <= 1e-5, (name, float(got[name]), float(expected[name]))
    grads = torch.autograd.grad(got["loss"], half)
    for g, x in zip(grads, half):
        assert g.dtype == torch.bfloat16 and g.shape == x.shape and torch.isfinite(g.float()).all()
        assert g.float().abs().sum() > 0
