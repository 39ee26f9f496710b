"""PoseTrainingRunner: the epoch loop, evaluation, snapshots, the stats log and resuming."""
from __future__ import annotations

import csv
import io
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dlc_io import atomic_write_text
from dlc_train.runners.metrics import compute_metrics
from dlc_train.runners.schedulers import build_optimizer, build_scheduler
from dlc_train.runners.snapshots import SnapshotError, SnapshotManager, load_snapshot

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """"auto" (or None) -> cuda when available, else cpu."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(tree: Any, device: torch.device) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.to(device, non_blocking=True)
    if isinstance(tree, dict):
        return {k: _to_device(v, device) for k, v in tree.items()}
    return tree


class PoseTrainingRunner:
    """Trains a PoseModel.

    Args:
        model: the PoseModel (``forward``, ``get_target``, ``get_loss``, ``get_predictions``).
        optimizer, scheduler: built from the config's ``runner`` section (scheduler may be None).
        snapshot_manager: where and when snapshots are written.
        device: "auto", "cpu", "cuda", "cuda:1", ...
        eval_interval: evaluate every this many epochs (and after the last one); 0: never.
        save_optimizer_state: store the optimizer state in snapshots (bigger files; exact resume).
        pcutoff: likelihood threshold of ``test.rmse_pcutoff``.
        display_iters: log the running loss every this many iterations.
        grad_clip_norm: clip the gradient's global norm to this (None: no clipping).
        log_path: the ``train_stats.csv`` file (None: the snapshot folder's).
        head: the head whose predictions are evaluated.
        progress: a progress bar per epoch (running loss in its postfix) and one line per epoch
            on stdout (loss, lr, metrics, time); False: logging only.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None,
                 snapshot_manager: SnapshotManager, device: str | torch.device = "auto",
                 eval_interval: int = 1, save_optimizer_state: bool = False,
                 pcutoff: float = 0.6, display_iters: int = 500,
                 grad_clip_norm: float | None = None, log_path: str | Path | None = None,
                 head: str = "bodypart", progress: bool = False):
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.snapshots = snapshot_manager
        self.eval_interval = int(eval_interval or 0)
        self.save_optimizer_state = bool(save_optimizer_state)
        self.pcutoff = float(pcutoff)
        self.display_iters = max(1, int(display_iters or 1))
        self.grad_clip_norm = grad_clip_norm
        self.log_path = Path(log_path) if log_path else snapshot_manager.folder / "train_stats.csv"
        self.head = head
        self.progress = bool(progress)
        self.start_epoch = 1  # the next epoch to train; > 1 after resume()

    @classmethod
    def from_config(cls, cfg: dict, model: nn.Module, train_folder: str | Path,
                    device: str | None = None, progress: bool = False) -> "PoseTrainingRunner":
        """Builds the runner from a pytorch_config.yaml dict (progress: see the class)."""
        runner = cfg.get("runner") or {}
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
                   pcutoff=pcutoff,
                   display_iters=(cfg.get("train_settings") or {}).get("display_iters", 500),
                   grad_clip_norm=runner.get("grad_clip_norm"), progress=progress)

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
        """Trains from ``self.start_epoch`` up to ``epochs`` (total, counting resumed ones)."""
        if self.start_epoch > epochs:
            logger.info("nothing to train: already at epoch %d of %d", self.start_epoch - 1,
                        epochs)
            return
        for epoch in range(self.start_epoch, epochs + 1):
            dataset = getattr(train_loader, "dataset", None)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            start = time.monotonic()
            losses = self.train_epoch(train_loader, epoch, epochs)
            lr = self.optimizer.param_groups[0]["lr"]
            if self.scheduler is not None:
                self.scheduler.step()
            last = epoch == epochs
            metrics: dict[str, float] = {}
            if test_loader is not None and self.eval_interval > 0 and (
                    epoch % self.eval_interval == 0 or last):
                metrics = self.evaluate(test_loader)
            line = ", ".join([f"epoch {epoch}/{epochs}: loss "
                              f"{losses.get('total_loss', float('nan')):.5f}", f"lr {lr:.2e}",
                              *(f"{k} {v:.3f}" for k, v in metrics.items()),
                              f"{time.monotonic() - start:.1f} s"])
            logger.info("%s", line)
            if self.progress:
                tqdm.write(line)  # above the bars, not through them
            self.snapshots.update(epoch, self.state_dict(epoch, metrics, losses), last=last)
            self._log_stats(epoch, lr, losses, metrics)
        self.start_epoch = epochs + 1

    def train_epoch(self, loader: Iterable, epoch: int,
                    epochs: int | None = None) -> dict[str, float]:
        """One pass over the loader; returns the mean of each loss.

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
            images = batch["image"].to(self.device, non_blocking=True)
            annotations = _to_device(batch["annotations"], self.device)
            outputs = self.model(images)
            targets = self.model.get_target(outputs, annotations)
            losses = self.model.get_loss(outputs, targets)
            total = losses["total_loss"]
            if not torch.isfinite(total):
                raise FloatingPointError(f"epoch {epoch}, iteration {it}: loss is {total.item()}"
                                         " (lower the learning rate?)")
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if self.grad_clip_norm:
                nn.utils.clip_grad_norm_(self.model.parameters(), float(self.grad_clip_norm))
            self.optimizer.step()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            n += 1
            bar.set_postfix(loss=f"{sums['total_loss'] / n:.5f}", refresh=False)
            if it % self.display_iters == 0:
                logger.info("epoch %d, iteration %d: loss %.5f", epoch, it, sums["total_loss"] / n)
        if n == 0:
            raise ValueError("the training loader yielded no batch (no training images?)")
        return {key: value / n for key, value in sums.items()}

    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> dict[str, float]:
        """Metrics on a loader, named ``test.<metric>`` (rmse, rmse_pcutoff, mAP, mAR)."""
        self.model.eval()
        gts, preds = [], []
        for batch in tqdm(loader, desc="evaluating", unit="image", leave=False,
                          disable=not self.progress, dynamic_ncols=True):
            images = batch["image"].to(self.device, non_blocking=True)
            outputs = self.model(images)
            poses = self.model.get_predictions(outputs)[self.head]["poses"]
            gts.extend(batch["annotations"]["keypoints"].cpu().numpy())
            preds.extend(poses.detach().float().cpu().numpy())
        self.model.train()
        if not gts:
            return {}
        metrics = compute_metrics(gts, preds, pcutoff=self.pcutoff)
        return {f"test.{k}": v for k, v in metrics.items()}

    def state_dict(self, epoch: int, metrics: dict[str, float],
                   losses: dict[str, float]) -> dict[str, Any]:
        """A snapshot dict in DeepLabCut 3's layout."""
        state: dict[str, Any] = {
            "metadata": {"epoch": epoch, "metrics": {k: float(v) for k, v in metrics.items()},
                         "losses": {k: float(v) for k, v in losses.items()}},
            "model": self.model.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }
        if self.save_optimizer_state:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    # -- stats log ---------------------------------------------------------------------------
    def _log_stats(self, epoch: int, lr: float, losses: dict[str, float],
                   metrics: dict[str, float]) -> None:
        """Rewrites train_stats.csv with this epoch's row (header grows as new columns appear)."""
        rows: list[dict[str, str]] = []
        if self.log_path.is_file():
            with open(self.log_path, newline="", encoding="utf-8") as f:
                # Rows of epochs >= this one come from a run we are replacing (resume).
                rows = [r for r in csv.DictReader(f) if _int(r.get("epoch")) < epoch]
        row = {"epoch": str(epoch), "learning_rate": f"{lr:.6g}"}
        row.update({f"train.{k}": f"{v:.6g}" for k, v in losses.items()})
        row.update({k: ("" if math.isnan(v) else f"{v:.6g}") for k, v in metrics.items()})
        rows.append(row)
        columns: list[str] = []
        for r in rows:
            columns.extend(k for k in r if k not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.log_path, buffer.getvalue())


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
