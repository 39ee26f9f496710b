"""Joining a video's segments into its one result, through the local run's own writers.

The segments' published ``.h5`` files hold the rows of their frame ranges. Their rows are
appended, in frame order, to the checkpoint a one-piece run of the video would have left when
decoding finished (same identity: bundle, video, selection, backend settings), saved as done.
:func:`~dlc_runtime.analyze.analyze_video`, called as for the whole video, then finds a finished
checkpoint and does what it does after any finished run: writes the ``.h5`` from the rows
(verified), ``_meta.pickle`` and ``.csv``, publishes them with the completion record, removes
the checkpoint. So the joined result is written by the very code that writes a serial one, and
a join killed at any point is redone by the rerun (the segments are kept until the result is
published).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlc_runtime.analysis_run import merge_ranges
from dlc_runtime.bundle import MANIFEST_NAME, Bundle
from dlc_runtime.checkpoint import READ_ROWS, Checkpoint, identity
from dlc_runtime.cluster.plan import probe_selection
from dlc_runtime.errors import OutputError
from dlc_runtime.outputs import H5_KEY, ResultPaths, RowLayout
from dlc_runtime.results import find_complete
from dlc_runtime.selection import FrameSelection

#: the facts of a run that the completion record keeps and ``_meta.pickle`` is written from.
_INFO_KEYS = ("fps", "batch_size", "width", "height", "n_frames_metadata", "backend", "decoder")


def run_identity(backend: str, device: str, decoder: str = "auto",
                 backend_options: dict[str, Any] | None = None, strict: bool = False,
                 allow_truncated: bool = False) -> dict[str, Any]:
    """The ``run`` section of a checkpoint's identity, as ``analyze_video`` builds it for these
    arguments (a difference would make it analyze the video again instead of publishing the
    joined rows; ``tests/test_cluster_ray.py`` checks that it publishes them)."""
    return {"backend": backend, "device": device, "decoder": decoder,
            "backend_options": backend_options or {}, "strict": strict,
            "allow_truncated": allow_truncated}


def write_joined_checkpoint(bundle: Bundle, video: str | os.PathLike[str],
                            dest: str | os.PathLike[str] | None, parts: Sequence[str],
                            run: dict[str, Any], start: Any = None, stop: Any = None,
                            stride: int = 1) -> int:
    """Write the video's finished checkpoint from its segments' results.

    Args:
        bundle: the loaded bundle.
        video: the video.
        dest: the run's destination folder (None: beside the video).
        parts: the segments' folders, in frame order; each must hold a complete result.
        run: :func:`run_identity` of the run's settings.
        start, stop, stride: the run's selection, as given to ``analyze_video``.

    Returns:
        The rows joined.

    Raises:
        OutputError: a segment's result is missing or incomplete.
    """
    video = Path(video)
    paths = ResultPaths.for_video(video, bundle.scorer, dest)
    selection, _ = probe_selection(video, start, stop, stride)
    layout = RowLayout(bundle.scorer, bundle.bodyparts, bundle.individuals,
                       bundle.unique_bodyparts, bundle.multi_animal)
    paths.h5.parent.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint(paths.checkpoint, paths.checkpoint_rows,
                      identity(bundle.path / MANIFEST_NAME, video, selection.as_dict(), run),
                      layout.n_values, None, None)
    ckpt.start(None, selection.start)
    records = []
    try:
        for part in parts:
            records.append(_append_part(ckpt, video, bundle.scorer, Path(part), selection))
        first, last = records[0]["run"], records[-1]["run"]
        ckpt.info = {key: first[key] for key in _INFO_KEYS}
        ckpt.info.update(start=first["start"], stop=last["stop"])
        ckpt.save(done=True)
    except BaseException:
        ckpt.discard()  # the segments are still there: the rerun joins again
        raise
    finally:
        ckpt.close()
    return ckpt.mark.rows


def _append_part(ckpt: Checkpoint, video: Path, scorer: str, folder: Path,
                 selection: FrameSelection) -> dict[str, Any]:
    """Append one segment's rows (its unreadable ranges with its first chunk); its record."""
    paths = ResultPaths.for_video(video, scorer, folder)
    record = find_complete(paths)
    if record is None:
        raise OutputError(f"{video}: the segment result {paths.h5} is missing or incomplete; "
                          "run the same command again to analyze it")
    unreadable = merge_ranges(record["run"].get("unreadable", []), selection.stride)
    with pd.HDFStore(paths.h5, mode="r") as store:
        if int(store.get_storer(H5_KEY).nrows or 0) == 0:
            return record
        for chunk in store.select(H5_KEY, chunksize=READ_ROWS):
            index = chunk.index.to_numpy(dtype=np.int64)
            ckpt.append(index, chunk.to_numpy(dtype=np.float64),
                        next_frame=int(index[-1]) + selection.stride,
                        last_decoded=int(index[-1]), unreadable=unreadable)
            unreadable = []
    return record


def remove_parts(folder: str | os.PathLike[str]) -> None:
    """Remove a joined video's segments folder (called once its result is published)."""
    shutil.rmtree(folder, ignore_errors=True)


__all__ = ["run_identity", "write_joined_checkpoint", "remove_parts"]
