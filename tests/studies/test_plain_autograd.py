"""studies/plain_autograd.py: its plain-autograd HEA + NDC computes the same losses and gradients as the dense form
and as the project's hand-written one (a study is only worth its numbers if both forms compute the same thing)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scrcl.model.losses import _hea_and_ndc
from studies.plain_autograd import dense_hea_ndc, plain_hea_ndc


def embeddings_and_graph(n: int = 40, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    e_m = F.normalize(torch.randn(n, d, generator=g), dim=1)
    e_g = F.normalize(torch.randn(n, d, generator=g), dim=1)
    nearest = torch.cdist(e_m, e_m).topk(4, largest=False).indices[:, 1:]  # 3 neighbours, then symmetrised
    a = torch.zeros(n, n)
    a[torch.arange(n)[:, None], nearest] = 1.0
    return e_m, e_g, ((a + a.T) > 0).float().to_sparse_csr()


def values_and_grads(form, e_m, e_g, graph, tau=0.1, alpha=100.0):
    a, b = e_m.clone().requires_grad_(), e_g.clone().requires_grad_()
    hea, ndc = form(a, b, graph, tau)
    (hea + alpha * ndc).backward()
    return [t.detach().double() for t in (hea, ndc, a.grad, b.grad)]


def test_plain_autograd_equals_the_dense_form_and_the_hand_written_one():
    e_m, e_g, graph = embeddings_and_graph()
    dense = values_and_grads(dense_hea_ndc, e_m.double(), e_g.double(), graph)
    plain = values_and_grads(plain_hea_ndc, e_m, e_g, graph)
    written = values_and_grads(_hea_and_ndc, e_m, e_g, graph)
    for got in (plain, written):
        for a, b in zip(got, dense):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()))


def test_the_comparison_sees_a_wrong_gradient():
    e_m, e_g, graph = embeddings_and_graph()
    dense = values_and_grads(dense_hea_ndc, e_m.double(), e_g.double(), graph)
    wrong = values_and_grads(lambda a, b, g, t: plain_hea_ndc(a, b, g, 1.1 * t), e_m, e_g, graph)
    assert not torch.allclose(wrong[2], dense[2], rtol=1e-4, atol=1e-6 * float(dense[2].abs().max()))
