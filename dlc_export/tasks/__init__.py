"""Export tasks, one module per kind of model (see ``base.py``): ``make_task`` picks one by
the config's ``method``."""
from __future__ import annotations

from typing import Callable

from dlc_export.options import ExportOptions
from dlc_export.source import ExportSource
from dlc_export.tasks import bottom_up, ctd, top_down
from dlc_export.tasks.base import ExportGraph, ExportTask, TaskManifest
from dlc_train.task import Task

#: config ``method`` -> task builder.
TASKS: dict[Task, Callable[[ExportSource, ExportOptions], ExportTask]] = {
    Task.BOTTOM_UP: bottom_up.make_task,
    Task.TOP_DOWN: top_down.make_task,
    Task.COND_TOP_DOWN: ctd.make_task,
}


def make_task(source: ExportSource, options: ExportOptions) -> ExportTask:
    """The task of ``source``'s config, with its models built."""
    return TASKS[source.config.task](source, options)


__all__ = ["ExportGraph", "ExportTask", "TaskManifest", "TASKS", "make_task"]
