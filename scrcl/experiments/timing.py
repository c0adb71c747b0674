"""Timing one training step the way the Trainer runs it, split into its parts (benchmarks/speed.py, scaling.py)."""

from __future__ import annotations

import time


def clock(device) -> float:
    """Seconds now, after the accelerator has finished its queued work."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def first_optimizer(configured):
    """The optimiser out of whatever ``configure_optimizers`` returned (an optimiser, a list or a dict)."""
    if isinstance(configured, dict):
        return configured["optimizer"]
    if isinstance(configured, (list, tuple)):
        return first_optimizer(configured[0])
    return configured


def autocast_dtype(precision: str):
    """The dtype the Trainer's ``precision`` runs the forward pass in under autocast (None for full precision)."""
    import torch

    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)


def _autocast(device, dtype):
    """torch's autocast on ``device`` in ``dtype``, as ``--precision bf16-mixed`` runs the forward pass; none for None."""
    import contextlib

    import torch

    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def timed_epoch(module, optimizer, batch, device, autocast_dtype=None) -> dict:
    """One full-graph training step (= one epoch), as ``training_step`` + the optimiser, split in three.

    The objective's backward ends when the gradients of all four of its inputs are complete (tensor hooks):
    autograd runs the objective's nodes, created last, before any encoder node. ``autocast_dtype`` (e.g.
    ``torch.bfloat16``) runs the forward pass under autocast, as ``--precision bf16-mixed`` does.
    """
    t0 = clock(device)
    with _autocast(device, autocast_dtype):
        out = module.model(batch)
        t1 = clock(device)
        terms = module.objective(out, batch.cell_graph)
    t2 = clock(device)
    done: list[float] = []
    for key in ("e_m", "e_g", "z_m", "z_g"):
        out[key].register_hook(lambda grad: done.append(clock(device)))
    terms["loss"].backward()
    t3 = clock(device)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    t4 = clock(device)
    loss_done = max(done, default=t2)
    return {
        "total_s": t4 - t0,
        "encoders_s": (t1 - t0) + (t3 - loss_done),
        "losses_s": (t2 - t1) + (loss_done - t2),
        "optimiser_s": t4 - t3,
        "loss": float(terms["loss"].detach()),
    }


def saved_for_backward_bytes(module, batch, autocast_dtype=None) -> int:
    """Bytes the autograd graph of one training step holds for its backward pass (each storage counted once, the
    weights and the constant graphs not): the activation memory that grows with the number of cells. Counted with
    torch's ``saved_tensors_hooks``; under activation checkpointing (``recompute``) what the checkpointed views
    recompute is not held, and is not counted."""
    device = next(module.parameters()).device

    def step():
        with _autocast(device, autocast_dtype):
            return module.objective(module.model(batch), batch.cell_graph)["loss"]

    saved = saved_bytes(step, skip=module.parameters())
    module.zero_grad(set_to_none=True)
    return saved


def saved_bytes(loss_fn, skip=()) -> int:
    """Bytes autograd holds for the backward pass of ``loss_fn()`` (a scalar), each storage counted once, the storages
    of the tensors in ``skip`` (e.g. the weights) not; runs the backward pass. Counted with torch's
    ``saved_tensors_hooks``: what a custom autograd function keeps on its context outside ``save_for_backward`` is not
    seen."""
    import torch

    seen: dict = {}
    skipped = {t.untyped_storage().data_ptr() for t in skip}

    def pack(tensor):
        if tensor.layout == torch.strided and tensor.untyped_storage().data_ptr() not in skipped:
            storage = tensor.untyped_storage()
            seen[(storage.data_ptr(), tensor.device)] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = loss_fn()
    loss.backward()
    return sum(seen.values())
