#!/usr/bin/env python
"""Could HEA + NDC be plain autograd instead of the hand-derived backward pass (issue 22, item 2)?

The same log-free equations as ``scrcl.model.losses`` (the float64 softmax deviations, the common shifts, the
float64 sums over cells), written as ordinary tensor code so that autograd derives the backward pass, in ~35
lines instead of the ~300 of ``_HEA``, ``_NDCLinear`` and their helpers. Both are run on the embeddings of a real
dataset (the network's output at initialisation, in training mode) and compared with the dense form of Eq. 3-5
(κ as an N × N matrix, float64): value and gradient errors, the median time of forward + backward, and the bytes
autograd keeps for the backward pass (torch's ``saved_tensors_hooks``, each storage counted once).

  python studies/plain_autograd.py --dataset pbmc10x --hidden-dim 1500
  python studies/plain_autograd.py --dataset pbmc10x --hidden-dim 16

One JSON line per width, and a row appended to ``studies/results/plain_autograd.md``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from scrcl.errors import CommandLineParser, output_file, run_entry, whole_number

ROOT = Path(__file__).resolve().parent.parent


def plain_hea_ndc(e_m, e_g, graph, tau: float):
    """(L_HEA, L_NDC) by ordinary tensor code: κᵢⱼ = (Pᵢ − Qⱼ)·(Xᵢ − Yⱼ)/τ summed as in ``ndc_loss``'s docstring."""
    import torch

    x, y = e_m.float(), e_g.float()
    n, d = x.shape
    with torch.no_grad():  # shifts: any common vector leaves κ unchanged
        sample = torch.linspace(0, n - 1, min(n, 2048)).round().long()
        m_y = y[sample].double().mean(0).float()
        m_q = torch.softmax(y[sample].double() / tau, 1).mean(0) - 1.0 / d
    p = torch.softmax(x.double() / tau, 1)
    q = torch.softmax(y.double() / tau, 1)
    p_hat, q_hat = (p - 1.0 / d - m_q).float(), (q - 1.0 / d - m_q).float()
    x_hat, y_hat = x - m_y, y - m_y
    deg = torch.sparse.mm(graph.double(), torch.ones(n, 1, dtype=torch.float64))[:, 0] + 1.0
    alpha = (x_hat * p_hat).sum(1).double()
    beta = (y_hat * q_hat).sum(1).double()
    a_y = torch.sparse.mm(graph, y_hat) + y_hat
    a_q = torch.sparse.mm(graph, q_hat) + q_hat
    s = deg * alpha + torch.sparse.mm(graph.double(), beta[:, None])[:, 0] + beta \
        - (p_hat * a_y).sum(1).double() - (x_hat * a_q).sum(1).double()
    sum_q, sum_y = q_hat.double().sum(0), y_hat.double().sum(0)
    diag = alpha + beta - (x_hat * q_hat).sum(1).double() - (p_hat * y_hat).sum(1).double()
    r = n * alpha + beta.sum() - x_hat.double() @ sum_q - p_hat.double() @ sum_y - diag
    ndc = ((n - 1) * s / (deg * r)).mean()
    flat_p = torch.softmax(x.flatten() / tau, 0)
    flat_q = torch.softmax(y.flatten() / tau, 0)
    glob = ((flat_p - flat_q) * (x - y).flatten()).sum(dtype=torch.float64)
    cell = ((p - q) * (x - y).double()).sum()
    return (glob / tau + cell / (2.0 * n * tau)).float(), ndc.float()


def dense_hea_ndc(e_m, e_g, graph, tau: float):
    """The paper's form in float64: NDC with κ as an N × N matrix (the project's ``ndc_loss(impl="dense")``), HEA by
    its logarithms (the project has no dense HEA)."""
    import torch.nn.functional as F

    from scrcl.model.losses import ndc_loss

    x, y = e_m.double(), e_g.double()
    ndc = ndc_loss(x, y, graph, tau, impl="dense")
    lp, lq = F.log_softmax(x.flatten() / tau, 0), F.log_softmax(y.flatten() / tau, 0)
    glob = ((lp.exp() - lq.exp()) * (lp - lq)).sum()
    rp, rq = F.log_softmax(x / tau, 1), F.log_softmax(y / tau, 1)
    cell = ((rp.exp() - rq.exp()) * (rp - rq)).sum(1).mean() / 2
    return glob + cell, ndc


def measure(form, e_m, e_g, graph, tau: float, alpha: float, repeats: int, held: int = 0):
    """Loss terms, gradients, median seconds of forward + backward, and the bytes saved for backward besides the two
    inputs (``held``: what the form keeps for its backward pass outside autograd's saved tensors, which the hooks of
    ``scrcl.experiments.timing.saved_bytes`` do not see)."""
    from scrcl.experiments.timing import saved_bytes

    def inputs():
        return e_m.detach().requires_grad_(), e_g.detach().requires_grad_()

    def step():
        a, b = inputs()
        hea, ndc = form(a, b, graph, tau)
        (hea + alpha * ndc).backward()
        return hea.detach(), ndc.detach(), a.grad, b.grad

    result = step()
    a, b = inputs()

    def objective():
        hea, ndc = form(a, b, graph, tau)
        return hea + alpha * ndc

    saved = saved_bytes(objective, skip=(a, b)) + held
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times) if times else float("nan"), saved


def errors(result, reference) -> dict:
    """Relative errors of the loss terms and of each gradient (max |δ| / max |reference|)."""
    out = {}
    for name, a, b in zip(("hea", "ndc", "grad_e_m", "grad_e_g"), result, reference):
        out[name] = float((a.double() - b.double()).abs().max() / b.double().abs().max())
    return out


def main(argv=None) -> int:
    parser = CommandLineParser(prog="plain_autograd.py", command="python studies/plain_autograd.py", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="pbmc10x")
    parser.add_argument("--hidden-dim", type=whole_number(1), default=1500)
    parser.add_argument("--repeats", type=whole_number(1), default=5)
    parser.add_argument("--seed", type=whole_number(0), default=5)
    parser.add_argument("--output", type=output_file, default=ROOT / "studies" / "results" / "plain_autograd.md")
    args = parser.parse_args(argv)

    import lightning as L
    import torch

    from datamodules.datamodule import ScRCLDataModule
    from scrcl.experiments.tables import code_version, machine
    from scrcl.model.losses import _hea_and_ndc
    from scrcl.train.config import resolve_config
    from scrcl.train.loggers import quiet_libraries
    from scrcl.train.module import build_module

    quiet_libraries()
    config = resolve_config(dataset=args.dataset, overrides={"hidden_dim": args.hidden_dim, "logger": "none", "umap": False})
    datamodule = ScRCLDataModule.from_config(config)
    datamodule.setup("fit")
    L.seed_everything(args.seed, verbose=False)
    module = build_module(config, datamodule.n_cells, datamodule.n_genes, datamodule.n_clusters)
    module.train()
    with torch.no_grad():
        out = module.model(datamodule.batch)
    e_m, e_g, graph, tau, alpha = out["e_m"], out["e_g"], datamodule.batch.cell_graph, config["tau"], config["alpha"]

    reference, _, _ = measure(dense_hea_ndc, e_m, e_g, graph, tau, alpha, 0)
    # _NDCLinear keeps Q̂ (N × d, float32) on its context, where the hooks do not see it: counted by hand
    written, written_s, written_saved = measure(lambda a, b, g, t: _hea_and_ndc(a, b, g, t), e_m, e_g, graph, tau, alpha,
                                                args.repeats, held=e_g.numel() * 4)
    plain, plain_s, plain_saved = measure(plain_hea_ndc, e_m, e_g, graph, tau, alpha, args.repeats)
    n = e_m.shape[0]
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "dataset": config["dataset"], "n_cells": n, "hidden_dim": args.hidden_dim,
        "threads": torch.get_num_threads(), "hand_written": {"seconds": written_s, "saved_kb_per_cell": written_saved / 1024 / n,
                                                             "errors": errors(written, reference)},
        "plain_autograd": {"seconds": plain_s, "saved_kb_per_cell": plain_saved / 1024 / n, "errors": errors(plain, reference)},
        "code": code_version(ROOT), "machine": machine(),
    }
    print(json.dumps(record))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not args.output.exists():
        args.output.write_text(
            "# HEA + NDC: hand-derived backward pass vs plain autograd (studies/plain_autograd.py)\n\n"
            "Both forms against the dense float64 form of Eq. 3-5 on the network's embeddings at initialisation; "
            "float32 inputs; forward + backward of L_HEA + α·L_NDC, median of the repeats; *saved*: what autograd keeps "
            "for the backward pass besides the two inputs (for the hand-written form, Q̂ kept on its context included). Error: max |δ| / max |dense|.\n\n"
            "| date | dataset | cells | d | threads | form | s (fwd+bwd) | saved KB/cell | HEA err | NDC err | grad Eᵐ err | grad Eᵍ err | code | machine |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    with args.output.open("a") as f:
        for form in ("hand_written", "plain_autograd"):
            r, e = record[form], record[form]["errors"]
            f.write(f"| {record['date']} | {record['dataset']} | {n} | {args.hidden_dim} | {record['threads']} | {form.replace('_', ' ')} | "
                    f"{r['seconds']:.4f} | {r['saved_kb_per_cell']:.1f} | {e['hea']:.1e} | {e['ndc']:.1e} | {e['grad_e_m']:.1e} | "
                    f"{e['grad_e_g']:.1e} | {record['code']} | {record['machine']} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
