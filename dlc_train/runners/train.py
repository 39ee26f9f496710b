"""PoseTrainingRunner: the epoch loop, evaluation, snapshots, the stats log and resuming; on one
process or, under torchrun, on several (see runners/distributed.py)."""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dlc_train.runners import distributed
from dlc_train.runners.distributed import resolve_device  # noqa: F401  (its historical home)
from dlc_train.runners.metrics import compute_metrics
from dlc_train.runners.precision import Precision, precision_for
from dlc_train.runners.schedulers import build_optimizer, build_scheduler
from dlc_train.runners.snapshots import SnapshotError, SnapshotManager, load_snapshot
from dlc_train.runners.stats import FILENAME as STATS_FILENAME
from dlc_train.runners.stats import stats_row, write_epoch

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's random draws: a function of (seed, epoch) only, so a resumed run
    draws what the uninterrupted one drew."""
    return int(np.random.SeedSequence([int(seed) % 2**32, int(epoch)]).generate_state(1)[0])


def _to_device(tree: Any, device: torch.device) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.to(device, non_blocking=True)
    if isinstance(tree, dict):
        return {k: _to_device(v, device) for k, v in tree.items()}
    return tree


def model_inputs(annotations: dict[str, Any]) -> dict[str, Any]:
    """What the model reads besides the images: CTD conditions travel with the annotations."""
    if "cond_keypoints" not in annotations:
        return {}
    return {"cond_kpts": annotations["cond_keypoints"]}


class PoseTrainingRunner:
    """Trains a PoseModel.

    Under torchrun (``WORLD_SIZE`` > 1) the runner joins the process group when it is made,
    trains a DistributedDataParallel wrapper on this rank's shard of the data (batch_size is per
    process), averages the logged losses over ranks, and only rank 0 writes snapshots,
    ``learning_stats.csv``, log lines and progress bars. ``fit`` ends the process group.

    Args:
        model: the PoseModel (``forward``, ``get_target``, ``get_loss``, ``get_predictions``).
        optimizer, scheduler: built from the config's ``runner`` section (scheduler may be None).
        snapshot_manager: where and when snapshots are written.
        device: "auto", "cpu", "cuda", "cuda:1", ... (under torchrun: "auto", "cuda" or "cpu").
        eval_interval: evaluate every this many epochs (and after the last one); 0: never.
        save_optimizer_state: store the optimizer state in snapshots (bigger files; exact resume).
        pcutoff: likelihood threshold of ``test.rmse_pcutoff``.
        display_iters: log the running loss every this many iterations.
        grad_clip_norm: clip the gradient's global norm to this (None: no clipping).
        log_path: the ``learning_stats.csv`` file (None: the snapshot folder's).
        head: the head whose predictions are evaluated.
        progress: a progress bar per epoch (running loss in its postfix) and one line per epoch
            on stdout (loss, lr, metrics, time); False: logging only.
        seed: the shuffling order and the global RNGs of epoch ``e`` are seeded with
            ``epoch_seed(seed, e)`` (augmentation draws with (seed, e, image), see PoseDataset).
        amp, channels_last: ``runner.amp`` / ``runner.channels_last`` (None: unset; see
            runners/precision.py).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None,
                 snapshot_manager: SnapshotManager, device: str | torch.device = "auto",
                 eval_interval: int = 1, save_optimizer_state: bool = False,
                 pcutoff: float = 0.6, display_iters: int = 500,
                 grad_clip_norm: float | None = None, log_path: str | Path | None = None,
                 head: str = "bodypart", progress: bool = False, seed: int = 42,
                 amp: Any = None, channels_last: bool | None = None):
        self.dist, self.device = distributed.setup(device)
        self.precision: Precision = precision_for(amp, channels_last, self.device,
                                                  announce=self.dist.is_main)
        self.model = self.precision.model(model.to(self.device))
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.snapshots = snapshot_manager
        self.eval_interval = int(eval_interval or 0)
        self.save_optimizer_state = bool(save_optimizer_state)
        self.pcutoff = float(pcutoff)
        self.display_iters = max(1, int(display_iters or 1))
        self.grad_clip_norm = grad_clip_norm
        self.log_path = Path(log_path) if log_path else snapshot_manager.folder / STATS_FILENAME
        self.head = head
        self.progress = bool(progress) and self.dist.is_main  # other ranks stay silent
        self.seed = int(seed)
        self.start_epoch = 1  # the next epoch to train; > 1 after resume()
        self._train_model: nn.Module = self.model  # the DDP wrapper while fit() runs under it
        self._scaler = self.precision.grad_scaler()

    @classmethod
    def from_config(cls, cfg: dict, model: nn.Module, train_folder: str | Path,
                    device: str | None = None, progress: bool = False) -> "PoseTrainingRunner":
        """Builds the runner from a pytorch_config.yaml dict (progress: see the class)."""
        runner = cfg.get("runner") or {}
        settings = cfg.get("train_settings") or {}
        snap = runner.get("snapshots") or {}
        key_metric = runner.get("key_metric", "test.mAP")
        manager = SnapshotManager(
            train_folder, key_metric=key_metric,
            key_metric_asc=runner.get("key_metric_asc", True),
            max_snapshots=snap.get("max_snapshots", 5), save_epochs=snap.get("save_epochs", 25),
            prefix=runner.get("snapshot_prefix") or "snapshot")
        device = device or runner.get("device") or cfg.get("device") or "auto"
        optimizer = build_optimizer(runner.get("optimizer"), model.parameters())
        scheduler = build_scheduler(runner.get("scheduler"), optimizer)
        pcutoff = ((cfg.get("inference") or {}).get("eval") or {}).get("pcutoff", 0.6)
        return cls(model, optimizer, scheduler, manager, device=device,
                   eval_interval=runner.get("eval_interval", 1),
                   save_optimizer_state=snap.get("save_optimizer_state", False),
                   pcutoff=pcutoff, display_iters=settings.get("display_iters", 500),
                   grad_clip_norm=runner.get("grad_clip_norm"), progress=progress,
                   seed=int(settings.get("seed") or 42), amp=runner.get("amp"),
                   channels_last=runner.get("channels_last"))

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    # -- resume ------------------------------------------------------------------------------
    def resume(self, snapshot: str | Path | None = None) -> int:
        """Restores model / optimizer (when saved) / scheduler; returns the snapshot's epoch.

        Args:
            snapshot: a snapshot file; None picks the latest in the snapshot folder.
        """
        if snapshot is None:
            latest = self.snapshots.latest()
            if latest is None:
                raise SnapshotError(f"cannot resume: no snapshot in {self.snapshots.folder}")
            snapshot = latest.path
        data = load_snapshot(snapshot)
        try:
            self.model.load_state_dict(data["model"])
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise SnapshotError(f"snapshot {snapshot} does not fit this model: {first}") from None
        if data.get("optimizer") is not None:
            self.optimizer.load_state_dict(data["optimizer"])
        if self._scaler is not None and data.get("scaler"):  # float16 runs: the loss scale
            self._scaler.load_state_dict(data["scaler"])
        if self.scheduler is not None and data.get("scheduler"):
            self.scheduler.load_state_dict(data["scheduler"])
            if data.get("optimizer") is None:
                # Without optimizer state the groups hold the initial LR; schedulers such as
                # StepLR compute the next LR from the current one, so set it back first.
                for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                    group["lr"] = lr
        epoch = int((data.get("metadata") or {}).get("epoch", 0))
        self.snapshots.restore_best_metric()
        self.start_epoch = epoch + 1
        logger.info("resumed from %s (epoch %d)", snapshot, epoch)
        return epoch

    # -- loop --------------------------------------------------------------------------------
    def fit(self, train_loader: Iterable, test_loader: Iterable | None, epochs: int) -> None:
        """Trains from ``self.start_epoch`` up to ``epochs`` (total, counting resumed ones);
        under torchrun, ends the process group it joined (also when training fails)."""
        try:
            self._fit(train_loader, test_loader, epochs)
        finally:
            self._train_model = self.model
            distributed.close()

    def _fit(self, train_loader: Iterable, test_loader: Iterable | None, epochs: int) -> None:
        if self.start_epoch > epochs:
            logger.info("nothing to train: already at epoch %d of %d", self.start_epoch - 1,
                        epochs)
            return
        train_loader = distributed.shard_train_loader(train_loader, self.dist, self.seed)
        test_loader = distributed.shard_eval_loader(test_loader, self.dist)
        self._train_model = distributed.wrap_model(self.model, self.dist, self.device)
        for epoch in range(self.start_epoch, epochs + 1):
            self._start_epoch(train_loader, epoch)
            start = time.monotonic()
            losses = self.train_epoch(train_loader, epoch, epochs)
            distributed.sync_buffers(self.model, self.dist)
            lr = self.optimizer.param_groups[0]["lr"]
            if self.scheduler is not None:
                self.scheduler.step()
            last = epoch == epochs
            metrics: dict[str, float] = {}
            eval_losses: dict[str, float] = {}
            if test_loader is not None and self.eval_interval > 0 and (
                    epoch % self.eval_interval == 0 or last):
                metrics, eval_losses = self._evaluate(test_loader)
            if not self.is_main:
                continue
            line = ", ".join([f"epoch {epoch}/{epochs}: loss "
                              f"{losses.get('total_loss', float('nan')):.5f}", f"lr {lr:.2e}",
                              *(f"{k} {v:.3f}" for k, v in metrics.items()),
                              f"{time.monotonic() - start:.1f} s"])
            logger.info("%s", line)
            if self.progress:
                tqdm.write(line)  # above the bars, not through them
            self.snapshots.update(epoch, self.state_dict(epoch, metrics, losses, eval_losses),
                                  last=last)
            write_epoch(self.log_path, epoch, stats_row(losses, eval_losses, metrics))
        self.start_epoch = epochs + 1

    def _start_epoch(self, loader: Iterable, epoch: int) -> None:
        """Seeds everything random in epoch ``epoch`` from (seed, epoch) alone: the shuffling
        order (the loader's generator, or DistributedSampler's epoch), the global RNGs and the
        dataset's augmentation draws."""
        seed = epoch_seed(self.seed, epoch)
        seed_everything(seed)
        generator = getattr(loader, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(seed)
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)

    def train_epoch(self, loader: Iterable, epoch: int,
                    epochs: int | None = None) -> dict[str, float]:
        """One pass over the loader; returns the mean of each loss (over every rank's batches
        under torchrun).

        Args:
            loader: yields batches (``image``, ``annotations``).
            epoch, epochs: this epoch and the total (for the progress bar's label).
        """
        self.model.train()
        sums: dict[str, float] = {}
        n = 0
        # leave=False: the epoch's summary line replaces its bar.
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}",
                   unit="batch", leave=False, disable=not self.progress, dynamic_ncols=True)
        for it, batch in enumerate(bar, start=1):
            losses = self._step(batch)
            total = losses["total_loss"]
            if not torch.isfinite(total):
                raise FloatingPointError(f"epoch {epoch}, iteration {it}: loss is {total.item()}"
                                         " (lower the learning rate?)")
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            n += 1
            bar.set_postfix(loss=f"{sums['total_loss'] / n:.5f}", refresh=False)
            if it % self.display_iters == 0 and self.is_main:
                logger.info("epoch %d, iteration %d: loss %.5f", epoch, it, sums["total_loss"] / n)
        if n == 0:
            raise ValueError("the training loader yielded no batch (no training images?)")
        sums, n = distributed.sum_across(sums, n, self.dist, self.device)
        return {key: value / n for key, value in sums.items()}

    def _step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One optimisation step on a batch; returns its losses."""
        images = self.precision.images(batch["image"].to(self.device, non_blocking=True))
        annotations = _to_device(batch["annotations"], self.device)
        with self.precision.autocast():
            losses = self._losses(self._train_model, images, annotations)
        total = losses["total_loss"]
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(total):
            return losses  # train_epoch raises; no step on a non-finite loss
        if self._scaler is not None:  # float16: scaled so that small gradients survive
            self._scaler.scale(total).backward()
            self._scaler.unscale_(self.optimizer)
        else:
            total.backward()
        if self.grad_clip_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), float(self.grad_clip_norm))
        if self._scaler is not None:
            self._scaler.step(self.optimizer)
            self._scaler.update()
        else:
            self.optimizer.step()
        return losses

    def _losses(self, model: nn.Module, images: torch.Tensor,
                annotations: dict[str, Any]) -> dict[str, torch.Tensor]:
        """A batch's losses with ``total_loss`` (a hook: detectors compute theirs their way)."""
        outputs = model(images, **model_inputs(annotations))
        return self.model.get_loss(outputs, self.model.get_target(outputs, annotations))

    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> dict[str, float]:
        """Metrics on a loader, named ``test.<metric>`` (rmse, rmse_pcutoff, mAP, mAR)."""
        return self._evaluate(loader)[0]

    @torch.no_grad()
    def _evaluate(self, loader: Iterable) -> tuple[dict[str, float], dict[str, float]]:
        """Metrics (``test.<metric>``) and the mean losses on the test images (each rank reads
        its share of them under torchrun; the results are gathered on every rank)."""
        self.model.eval()
        gts, preds = [], []
        sums: dict[str, float] = {}
        n = 0
        for batch in tqdm(loader, desc="evaluating", unit="image", leave=False,
                          disable=not self.progress, dynamic_ncols=True):
            images = batch["image"].to(self.device, non_blocking=True)
            annotations = _to_device(batch["annotations"], self.device)
            outputs = self.model(images, **model_inputs(annotations))
            losses = self.model.get_loss(outputs, self.model.get_target(outputs, annotations))
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            n += 1
            poses = self.model.get_predictions(outputs)[self.head]["poses"]
            gts.extend(batch["annotations"]["keypoints"].cpu().numpy())
            preds.extend(poses.detach().float().cpu().numpy())
        self.model.train()
        gts = distributed.gather_lists(gts, self.dist)
        preds = distributed.gather_lists(preds, self.dist)
        if self.dist.enabled:
            # A rank with no test image has no loss keys: gather the sums instead of reducing.
            parts = distributed.gather_lists([(sums, n)], self.dist)
            keys = sorted({k for part_sums, _ in parts for k in part_sums})
            sums = {k: sum(part_sums.get(k, 0.0) for part_sums, _ in parts) for k in keys}
            n = sum(count for _, count in parts)
        if not gts:
            return {}, {}
        metrics = compute_metrics(gts, preds, pcutoff=self.pcutoff)
        return ({f"test.{k}": v for k, v in metrics.items()},
                {k: v / n for k, v in sums.items()} if n else {})

    def state_dict(self, epoch: int, metrics: dict[str, float], losses: dict[str, float],
                   eval_losses: dict[str, float] | None = None) -> dict[str, Any]:
        """A snapshot dict in DeepLabCut 3's layout: metadata ``metrics`` named
        ``metrics/test.<metric>`` and ``losses`` ``train.<loss>`` / ``eval.<loss>`` as its
        runner names them; the bare model's keys (never DDP's ``module.``), contiguous weights
        whatever the memory format trained in; ``scaler``, ours, in float16 runs."""
        model_state = {k: v.contiguous() if v.dim() == 4 else v
                       for k, v in self.model.state_dict().items()}
        named_losses = {f"train.{k}": float(v) for k, v in losses.items()}
        named_losses.update({f"eval.{k}": float(v) for k, v in (eval_losses or {}).items()})
        state: dict[str, Any] = {
            "metadata": {"epoch": epoch,
                         "metrics": {f"metrics/{k}": float(v) for k, v in metrics.items()},
                         "losses": named_losses},
            "model": model_state,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }
        if self.save_optimizer_state:
            state["optimizer"] = self.optimizer.state_dict()
        if self._scaler is not None:
            state["scaler"] = self._scaler.state_dict()
        return state
