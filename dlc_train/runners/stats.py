"""``learning_stats.csv``: one row per epoch, as DeepLabCut 3's CSVLogger writes it.

Columns: ``step`` (the epoch), then every logged name in sorted order: ``losses/train.<loss>``
(each epoch), ``losses/eval.<loss>`` and ``metrics/test.<metric>`` (epochs that were
evaluated; empty elsewhere). Values are Python's float text (``nan`` where a metric is
undefined), as DeepLabCut's ``csv.writer`` leaves them.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from dlc_io import atomic_write_text

FILENAME = "learning_stats.csv"


def stats_row(losses: dict[str, float], eval_losses: dict[str, float],
              metrics: dict[str, float]) -> dict[str, float]:
    """DeepLabCut's names for an epoch's values: ``metrics`` keys are ``test.<metric>``."""
    row = {f"losses/train.{k}": float(v) for k, v in losses.items()}
    row.update({f"losses/eval.{k}": float(v) for k, v in eval_losses.items()})
    row.update({f"metrics/{k}": float(v) for k, v in metrics.items()})
    return row


def write_epoch(path: Path, epoch: int, values: dict[str, float]) -> None:
    """Rewrites ``path`` with this epoch's row after the rows of earlier epochs already there
    (those of this epoch or later come from a run a resume replaces)."""
    rows: list[dict[str, str]] = []
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if _int(r.get("step")) < epoch]
    rows.append({"step": str(epoch), **{k: str(v) for k, v in values.items()}})
    names = sorted({k for r in rows for k in r if k != "step"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["step", *names], restval="",
                            lineterminator="\r\n")  # csv.writer's default, as DeepLabCut's
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buffer.getvalue())


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
