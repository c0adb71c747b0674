"""Callbacks: k-means + scores every N epochs, UMAPs and domain maps, averaged weights, and the label-free result.

Labels only ever *score*: the reported result is the final epoch's clustering, or (``select``) the evaluation whose
own clustering scores best on a label-free criterion of the embedding. The evaluation history is kept so that the
best-by-label epoch can be written beside it as ``oracle_*`` — a figure for comparing with the paper's protocol,
never the result.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import numpy as np
import torch

from scrcl.eval.clustering import kmeans, refine_spatial
from scrcl.errors import Interrupted, TrainingDiverged
from scrcl.eval.metrics import SCORES, clustering_scores, internal_scores
from scrcl.train.results import final_line



@contextmanager
def training_streams_kept(device):
    """Whatever runs inside leaves the training's random streams (torch on the device, numpy, Python) as it found
    them: an evaluation must not move the dropout masks of the epochs after it."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def evaluation_line(record: dict, max_epochs: int) -> str:
    """``epoch 200/500: loss 1.3912; ACC 0.7968 NMI 0.7600 ARI 0.7311 F1 0.6929; k-means 5.6 s`` (scores when labelled)."""
    parts = [f"epoch {record['epoch']}/{max_epochs}:"]
    if "loss" in record:
        parts.append(f"loss {record['loss']:.4f};")
    if "acc" in record:  # labelled: the scores as the run's last line writes them
        parts.append(final_line(record) + ";")
    parts.append(f"k-means {record['kmeans_s']:.1f} s")
    return " ".join(parts)


class ClusteringEvaluator(L.Callback):
    """Every ``every`` epochs and after the last one: embed, k-means, score, log; UMAP now and then."""

    def __init__(self, batch, n_clusters: int, seed: int, every: int, run_dir: Path | None = None, umap_every: int = 5,
                 umap: bool = True, radius: int = 0, label_names: list[str] | None = None, echo: Callable[[str], None] | None = None,
                 select: str = "final", averaged: "AveragedWeights | None" = None):
        self.batch = batch
        self.n_clusters = n_clusters
        self.seed = seed
        self.every = every
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.umap_every = umap_every
        self.umap = umap  # False: domain maps only, no UMAP
        self.radius = radius
        self.label_names = label_names
        self.echo = echo  # called with one line per evaluation (epoch, loss, scores), e.g. when no progress bar shows
        self.select = select  # "final" or a criterion of INTERNAL: which evaluation is reported
        self.averaged = averaged  # clustering the averaged weights (weight_averaging), the live ones beside them
        self.history: list[dict] = []
        self._on_device = None
        self.final: dict | None = None
        self.selected: dict | None = None  # the best evaluation by ``select`` so far (epoch, scores, arrays)

    # -- helpers ----------------------------------------------------------------------------------
    def _labels(self):
        y = getattr(self.batch, "y", None)
        if y is None:
            return None, None
        y = y.cpu().numpy()
        return y, y >= 0

    def cluster(self, pl_module, network=None) -> tuple[np.ndarray, dict]:
        """Embedding (N, D) as float32 numpy and the clustering of it, with scores when labels exist and the
        label-free criteria (``INTERNAL``) of the k-means clustering. ``network``: another set of weights (averaged)."""
        if self._on_device is None or self._on_device[0] != pl_module.device:  # copy to the accelerator once, not every evaluation
            self._on_device = (pl_module.device, self.batch.to(pl_module.device))
        batch = self._on_device[1]
        embedding = pl_module.embed(batch, network).float().cpu().numpy()
        if not np.isfinite(embedding).all():  # k-means would stop with sklearn's traceback
            epoch = pl_module.trainer.current_epoch + 1 if pl_module._trainer is not None else None
            raise TrainingDiverged.after("embedding", epoch, getattr(pl_module.hparams, "lr", None))
        pred = kmeans(embedding, self.n_clusters, seed=self.seed)
        result = {"embedding": embedding, "pred_unrefined": pred, "pred": pred}
        if self.radius > 0 and getattr(self.batch, "coords", None) is not None:
            result["pred"] = refine_spatial(pred, self.batch.coords.cpu().numpy(), self.radius)
        result["internal"] = internal_scores(embedding, pred, seed=self.seed)  # no labels: may choose what is reported
        y, known = self._labels()
        scores = {}
        if y is not None:
            scores = clustering_scores(y[known], result["pred"][known])
            if self.radius > 0 and getattr(self.batch, "coords", None) is not None:
                unrefined = clustering_scores(y[known], pred[known])
                scores.update({f"{k}_unrefined": v for k, v in unrefined.items()})
        return result, scores

    def _evaluate(self, trainer, pl_module, final: bool):
        epoch = trainer.current_epoch + 1  # epochs completed
        t0 = time.perf_counter()
        network = self.averaged.network() if self.averaged is not None else None
        result, scores = self.cluster(pl_module, network)
        record = {"epoch": epoch, **scores, **result["internal"], "kmeans_s": time.perf_counter() - t0}
        if network is not None:  # what the live weights give at the same epoch, beside the averaged ones
            live, live_scores = (result, scores) if network is pl_module.model else self.cluster(pl_module)
            record.update({f"live_{k}": v for k, v in {**live_scores, **live["internal"]}.items()})
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:  # kept beside the scores: where the loss flattens is how epochs are set
            record["loss"] = float(loss)
        if not self.history or self.history[-1]["epoch"] != epoch:
            self.history.append(record)
        if scores:
            pl_module.log_dict({f"val/{k}": float(v) for k, v in scores.items()}, batch_size=1)
        if self.echo is not None:
            self.echo(evaluation_line(record, trainer.max_epochs))
        n_evals = len(self.history)
        if final or (self.umap_every > 0 and n_evals % self.umap_every == 0):
            self._plot(trainer, result, epoch, final)
            self._domain_map(trainer, result, epoch, final)
        if final:
            self.final = {"epoch": epoch, "scores": scores, **result}
        if self.select != "final":
            value = result["internal"][self.select]
            if np.isfinite(value) and (self.selected is None or value > self.selected["criterion"]):  # ties: the earlier
                self.selected = {"epoch": epoch, "scores": scores, "criterion": value, **result}

    def reported(self) -> dict | None:
        """The evaluation a run reports: the final one, or the best by ``select`` (the final one when none scored)."""
        if self.select == "final" or self.selected is None:
            return self.final
        return self.selected

    def _plot(self, trainer, result, epoch, final):
        if self.run_dir is None or not self.umap:
            return
        from scrcl.eval.plots import umap_figure

        y, _ = self._labels()
        truth = None
        if y is not None:
            names = self.label_names or [str(i) for i in range(int(y.max()) + 1)]
            truth = np.array([names[v] if v >= 0 else "unlabelled" for v in y], dtype=object)
        path = self.run_dir / ("umap_final.png" if final else f"umap/epoch_{epoch:04d}.png")
        umap_figure(result["embedding"], result["pred"], truth, path, title=f"scRCL embedding, epoch {epoch}", seed=self.seed)
        _log_image(trainer, "umap_final" if final else "umap", path)

    def _domain_map(self, trainer, result, epoch, final):
        """Spatial data: spots on the tissue by predicted domain (refined, raw) beside the annotation."""
        coords = getattr(self.batch, "coords", None)
        task = getattr(getattr(trainer, "datamodule", None), "task", "st")  # a file with coordinates run as sc: no map
        if self.run_dir is None or coords is None or task != "st":
            return
        from scrcl.eval.spatial_maps import domain_map_figure

        y, _ = self._labels()
        truth = None
        if y is not None:
            names = self.label_names or [str(i) for i in range(int(y.max()) + 1)]
            truth = np.array([names[v] if v >= 0 else None for v in y], dtype=object)
        path = self.run_dir / ("domains_final.png" if final else f"domains/epoch_{epoch:04d}.png")
        domain_map_figure(coords.cpu().numpy(), result["pred"], path, truth=truth, radius=self.radius,
                          pred_unrefined=result["pred_unrefined"] if self.radius > 0 else None,
                          title=f"scRCL spatial domains, epoch {epoch}")
        _log_image(trainer, "domains_final" if final else "domains", path)

    # -- hooks ------------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        last = epoch >= trainer.max_epochs
        if last or (self.every > 0 and epoch % self.every == 0):
            with training_streams_kept(pl_module.device):  # the same seed trains the same way whatever --eval-every is
                self._evaluate(trainer, pl_module, final=last)

    def state_dict(self):
        state = {"history": self.history}
        if self.selected is not None:  # a resumed run must still report an evaluation made before the interruption
            chosen = self.selected
            state["selected"] = {
                "epoch": chosen["epoch"], "scores": chosen["scores"], "criterion": chosen["criterion"],
                "internal": chosen["internal"], "embedding": torch.from_numpy(chosen["embedding"]),
                "pred": torch.from_numpy(chosen["pred"]), "pred_unrefined": torch.from_numpy(chosen["pred_unrefined"])}
        return state

    def load_state_dict(self, state_dict):
        self.history = list(state_dict.get("history", []))
        chosen = state_dict.get("selected")
        if chosen is not None:
            self.selected = {**chosen, **{k: chosen[k].numpy() for k in ("embedding", "pred", "pred_unrefined")}}

    def oracle(self) -> dict:
        """Best-by-NMI (ARI for spatial) epoch over the evaluations: for comparison only, never reported."""
        scored = [h for h in self.history if "nmi" in h]
        if not scored:
            return {}
        key = "ari" if self.radius > 0 else "nmi"
        top = max(scored, key=lambda h: h[key])
        return {"oracle_epoch": top["epoch"], **{f"oracle_{k}": top[k] for k in SCORES}}



class AveragedWeights(L.Callback):
    """Weight averaging with torch's ``AveragedModel``: ``ema`` (exponential moving average, ``decay`` per step =
    per epoch) or ``swa`` (equal average of the weights after each epoch from ``start`` of the epochs on). The
    optimiser trains the live weights as before; the evaluations cluster the averaged ones, or the live ones while
    nothing has been averaged yet (SWA's first epochs). Kept in checkpoints."""

    def __init__(self, kind: str, decay: float = 0.98, start: float = 0.5):
        self.kind, self.decay, self.start = kind, decay, start
        self.model = None
        self._live = None
        self._pending: dict | None = None

    def network(self):
        """The averaged network (a copy of the LightningModule's ``model``); the live one until the first average
        (the copy holds the initial weights until then)."""
        return self._live if int(self.model.n_averaged) == 0 else self.model.module

    def on_fit_start(self, trainer, pl_module):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self._live = pl_module.model
        if self.model is None:
            self.model = AveragedModel(pl_module.model, multi_avg_fn=get_ema_multi_avg_fn(self.decay) if self.kind == "ema" else None,
                                       use_buffers=True)
        if self._pending is not None:  # restored from a checkpoint before the module was on its device
            self.model.load_state_dict(self._pending)
            self._pending = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.kind == "swa" and trainer.current_epoch < int(self.start * trainer.max_epochs):
            return
        self.model.update_parameters(pl_module.model)

    def state_dict(self):
        return {"averaged": self.model.state_dict()} if self.model is not None else {}

    def load_state_dict(self, state_dict):
        if "averaged" in state_dict:
            if self.model is not None:
                self.model.load_state_dict(state_dict["averaged"])
            else:
                self._pending = state_dict["averaged"]


def _log_image(trainer, key: str, path) -> None:
    """An image to the loggers that take images (W&B), on the step of the scores of the same epoch: Lightning logs an
    epoch's metrics at the epoch's last step, ``global_step - 1`` once the epoch's one step is done (at
    ``global_step`` an image landed one step after its scores, and the step axis went 1, 0, 2, 1, …)."""
    for logger in trainer.loggers:
        log_image = getattr(logger, "log_image", None)
        if log_image is not None:
            log_image(key=key, images=[str(path)], step=max(trainer.global_step - 1, 0))


class GracefulStop(L.Callback):
    """SIGTERM and Ctrl-C end training after the current epoch, with a checkpoint of it.

    SIGTERM is Lightning's own: its signal connector flags it (on SLURM it also saves and requeues on the
    requeue signal) and the fit loop raises ``SIGTERMException`` once the epoch is done. Lightning would turn a
    Ctrl-C into a ``KeyboardInterrupt`` mid-step and ``exit(1)`` with no checkpoint, so the first Ctrl-C is routed
    into the same flag; a second one stops at once. ``signum`` tells which signal it was.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous = None

    def on_fit_start(self, trainer, pl_module):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGINT)

        def first_ctrl_c(signum, frame):
            self.signum = signal.SIGINT
            signal.signal(signal.SIGINT, second_ctrl_c)
            trainer._signal_connector.received_sigterm = True  # Lightning's stop-after-this-epoch flag

        def second_ctrl_c(signum, frame):
            raise Interrupted(signal.SIGINT)

        signal.signal(signal.SIGINT, first_ctrl_c)

    def teardown(self, trainer, pl_module, stage):
        self._restore()

    def on_exception(self, trainer, pl_module, exception):
        """A fit ended by an exception (a second Ctrl-C, an error) skips ``teardown``: the caller's handler comes back
        here, or a Python session would keep routing its Ctrl-C into a finished trainer."""
        self._restore()

    def _restore(self) -> None:
        import signal
        import threading

        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class InterruptCheckpoint(L.Callback):
    """On a signal's stop (Lightning's ``SIGTERMException``, raised once the epoch is done) save ``last.ckpt`` of that
    epoch. Not on an error: a diverged run's NaN weights must not replace the last good checkpoint. (Lightning's
    ``OnExceptionCheckpoint`` saves on every exception, deletes its file at teardown and makes the next ``fit``
    load "last" by default, which would turn a fresh run into a resumed one.)"""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_exception(self, trainer, pl_module, exception):
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(str(self.path))


class WeightScale(L.Callback):
    """Log each weight matrix's root-mean-square after every epoch as ``weights/rms_<layer>``. Without labels it shows
    what Adam's L2 decay does over a long run: it empties the weights toward zero at about lr per step, which the
    loss curve does not show (docs/findings.md)."""

    def on_train_epoch_end(self, trainer, pl_module):
        for name, param in pl_module.model.named_parameters():
            if param.dim() == 2:
                pl_module.log(f"weights/rms_{name.removesuffix('.weight')}", param.detach().pow(2).mean().sqrt(),
                              on_step=False, on_epoch=True, batch_size=1)


class RandomStates(L.Callback):
    """Keep the random streams (torch, CUDA, numpy, Python) in every checkpoint and restore them on resume: Lightning
    restores weights and optimiser, not the generators, and a resumed run must draw the same dropout masks to end
    where an uninterrupted run ends. Stored as plain tensors and numbers (loadable with ``weights_only=True``)."""

    def state_dict(self):
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict):
        if not state_dict:
            return
        torch.set_rng_state(state_dict["torch"])
        numpy_state = state_dict["numpy"]
        np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                             numpy_state["has_gauss"], numpy_state["cached"]))
        random.setstate(state_dict["python"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class TrainClock(L.Callback):
    """Seconds spent in ``trainer.fit``, kept across a resume: a checkpoint carries the seconds spent
    before it, so a run killed and resumed reports the training time of the epochs it is made of (the
    epochs redone after the kill are not counted twice). ``started_at`` is the wall-clock time (Unix seconds) at which
    this process's training began, so a launcher can time the start-up before it. ``epoch_seconds``: each epoch this
    process trained, in order, from its start to the next epoch's start (the last one: to the end of training), so
    everything the Trainer does in an epoch counts (the step, every callback and the logging; an evaluation where the
    epoch has one); not kept across a resume."""

    def __init__(self):
        self.before = 0.0
        self.started_at: float | None = None
        self.epoch_seconds: list[float] = []
        self._start: float | None = None
        self._stop: float | None = None
        self._epoch_start: float | None = None

    def seconds(self) -> float:
        if self._start is None:
            return self.before
        return self.before + ((self._stop if self._stop is not None else time.perf_counter()) - self._start)

    def on_train_start(self, trainer, pl_module):
        self.started_at = time.time()
        self._start, self._stop = time.perf_counter(), None

    def on_train_epoch_start(self, trainer, pl_module):
        now = time.perf_counter()
        if self._epoch_start is not None:
            self.epoch_seconds.append(now - self._epoch_start)
        self._epoch_start = now

    def on_train_end(self, trainer, pl_module):
        self._stop = time.perf_counter()
        if self._epoch_start is not None:
            self.epoch_seconds.append(self._stop - self._epoch_start)
            self._epoch_start = None

    def state_dict(self):
        return {"seconds": self.seconds()}

    def load_state_dict(self, state_dict):
        self.before = float(state_dict.get("seconds", 0.0))
