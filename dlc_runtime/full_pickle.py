"""DeepLabCut 3's ``<video><scorer>_full.pickle``: every prediction of a multi-animal run.

The layout is DeepLabCut 3's (``pose_estimation_pytorch/apis/videos.py``,
``_generate_output_data``), read by its tracklet, assembly and "all detections" video tools::

    {"metadata": {"nms radius", "minimal confidence", "sigma", "PAFgraph", "PAFinds",
                  "all_joints", "all_joints_names", "nframes", "key_str_width"},
     "frame0000": {"coordinates": ([K + U arrays (N, 2) then (1, 2)],),
                   "confidence": [K arrays (N, 1), then U arrays (1, 1)],
                   "costs": None,
                   "identity": [K arrays (N, individuals)] + [U arrays of -1],  # identity heads
                   "bboxes": (D, 4) xywh, "bbox_scores": (D,)},                 # top-down
     ...}

Keys are ``"frame" + str(i).zfill(key_str_width)`` with ``key_str_width = ceil(log10(n))``
as DeepLabCut computes it; ``i`` is the true frame index (the ``.h5`` index), so a run over a
frame selection keys its frames by their place in the video.

DeepLabCut builds this dict in memory; here :class:`FullPickleWriter` spools each batch to a
side file and, at :meth:`~FullPickleWriter.finish`, streams the pickle out of it, so memory
stays flat on a video of any length. The file unpickles as a plain ``dict`` (it references
only ``builtins.dict`` and numpy), exactly what ``pickle.load`` gives for DeepLabCut's own.
"""
from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlc_io import CommitOnSuccess, fsync_file, part_path
from dlc_runtime.errors import OutputError

FULL_SUFFIX = "_full.pickle"


def full_pickle_path(h5_path: str | os.PathLike[str]) -> Path:
    """``<video><scorer>_full.pickle`` beside ``<video><scorer>.h5`` (DeepLabCut's name)."""
    h5_path = Path(h5_path)
    return h5_path.with_name(h5_path.stem + FULL_SUFFIX)


def key_str_width(n_frames: int) -> int:
    """DeepLabCut's ``int(ceil(log10(n)))``, in integers (no float rounding at powers of ten):
    the fewest digits w with ``10**w >= n``; 0 for one frame or none."""
    width = 0
    while 10 ** width < n_frames:
        width += 1
    return width


def full_metadata(bodyparts: Sequence[str], unique_bodyparts: Sequence[str] = (),
                  decoder: dict[str, Any] | None = None, n_frames: int = 0,
                  str_width: int = 0) -> dict[str, Any]:
    """The ``metadata`` entry. DeepLabCut takes the first five values from the model's test
    ``pose_cfg.yaml``; a bundle keeps them in its manifest's decoder section (PAF bundles:
    graph, kept edges, NMS radius, sigma, peak threshold). Where the bundle has none the
    values are what DeepLabCut writes when its config lacks them (None, sigma 1, no edges)."""
    decoder = decoder or {}
    graph = decoder.get("graph")
    graph = [list(map(int, edge)) for edge in graph] if graph else None
    keep = decoder.get("edges_to_keep")
    names = list(bodyparts) + list(unique_bodyparts)
    return {
        "nms radius": decoder.get("nms_radius"),
        "minimal confidence": decoder.get("peak_threshold"),
        "sigma": decoder.get("sigma", 1),
        "PAFgraph": graph,
        "PAFinds": [int(i) for i in keep] if keep is not None
        else np.arange(len(graph or [])),
        "all_joints": [[i] for i in range(len(names))],
        "all_joints_names": names,
        "nframes": int(n_frames),
        "key_str_width": int(str_width),
    }


def frame_entry(keypoints: np.ndarray, unique_keypoints: np.ndarray | None = None,
                identity_scores: np.ndarray | None = None, bboxes: np.ndarray | None = None,
                bbox_scores: np.ndarray | None = None) -> dict[str, Any]:
    """One frame's value, as DeepLabCut 3's ``_generate_output_data`` builds it.

    Args:
        keypoints: (N, K, 3) x, y, score of every predicted individual (all N, not only the
            project's individuals: the ``.h5`` keeps the first ones, this file keeps all).
        unique_keypoints: (U, 3) or (1, U, 3).
        identity_scores: (N, K, individuals) identity-head scores.
        bboxes, bbox_scores: the detector's (D, 4) xywh boxes and (D,) scores (top-down).
    """
    per_part = np.asarray(keypoints).transpose(1, 0, 2)  # (K, N, 3): DeepLabCut's order
    coordinates = [part[:, :2] for part in per_part]
    confidence = [part[:, 2:3] for part in per_part]
    n_unique = 0
    if unique_keypoints is not None:
        unique = np.asarray(unique_keypoints).reshape(-1, 3)[:, None, :]  # (U, 1, 3)
        coordinates += [part[:, :2] for part in unique]
        confidence += [part[:, 2:] for part in unique]
        n_unique = len(unique)
    entry: dict[str, Any] = {"coordinates": (coordinates,), "confidence": confidence,
                             "costs": None}
    if bboxes is not None:
        entry["bboxes"] = np.asarray(bboxes)
    if bbox_scores is not None:
        entry["bbox_scores"] = np.asarray(bbox_scores)
    if identity_scores is not None:
        ids = np.asarray(identity_scores).transpose(1, 0, 2)  # (K, N, individuals)
        entry["identity"] = list(ids)
        # DeepLabCut pads unique bodyparts with -1 so its video tools can index them.
        entry["identity"] += [-np.ones(ids.shape[1:]) for _ in range(n_unique)]
    return entry


class StreamedDict:
    """Pickles as ``dict()`` followed by its items, drawn from an iterator while pickling.

    ``__reduce__``'s fifth element is consumed in batches by the pickler, so the items are
    never all in memory; the unpickled object is a plain ``dict``. Values may be
    ``StreamedDict`` themselves (a dict of dicts, each streamed).
    """

    def __init__(self, items: Iterator[tuple[Any, Any]]) -> None:
        self._items = items

    def __reduce__(self):
        return dict, (), None, None, self._items


def dump_streamed(fh: Any, items: Iterator[tuple[Any, Any]]) -> None:
    """Pickle ``items`` to ``fh`` as one dict without holding them all: no memo, which would
    keep every value alive until the end (the values must not refer to each other)."""
    pickler = pickle.Pickler(fh, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    pickler.dump(StreamedDict(items))


class FullPickleWriter(CommitOnSuccess):
    """Append predictions batch by batch; :meth:`finish` writes ``<path>.part``.

    Args:
        path: the final ``_full.pickle`` path (see :func:`full_pickle_path`).
        bodyparts, unique_bodyparts: the names (``all_joints_names``).
        decoder: the manifest's decoder section (metadata values, see :func:`full_metadata`).

    Batches go to ``<path>.spool`` as they come; :meth:`finish` streams the pickle from it
    and removes it. Used as a context manager it commits on success and removes both files on
    error; a previous file at ``path`` is only ever replaced by a complete one. Write
    failures are one-line :class:`OutputError`\\ s.
    """

    def __init__(self, path: str | os.PathLike[str], bodyparts: Sequence[str],
                 unique_bodyparts: Sequence[str] = (),
                 decoder: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.part = part_path(self.path)
        self.spool = self.path.with_name(self.path.name + ".spool")
        self.bodyparts = list(bodyparts)
        self.unique_bodyparts = list(unique_bodyparts)
        self.decoder = dict(decoder or {})
        self.n_frames = 0
        self.last_index = -1
        self._finished = False

        def create():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return open(self.spool, "wb")

        self._fh = self._guard(create, "create", self.spool)

    @classmethod
    def for_bundle(cls, path: str | os.PathLike[str], bundle: Any) -> FullPickleWriter:
        """A writer with a :class:`~dlc_runtime.bundle.Bundle`'s names and decoder."""
        return cls(path, bundle.bodyparts, bundle.unique_bodyparts, bundle.manifest.decoder)

    def _guard(self, action, doing: str, where: Path):
        try:
            return action()
        except OSError as err:
            reason = err.strerror or str(err)
            raise OutputError(f"cannot {doing} {where}: {reason}; nothing was written under "
                              f"{self.path.name}") from err

    def append(self, frame_indices: np.ndarray, keypoints: np.ndarray,
               unique_keypoints: np.ndarray | None = None,
               identity_scores: np.ndarray | None = None,
               bboxes: Sequence[np.ndarray] | None = None,
               bbox_scores: Sequence[np.ndarray] | None = None) -> None:
        """Add one batch of B frames.

        Args:
            frame_indices: (B,) true frame indices, increasing.
            keypoints: (B, N, K, 3).
            unique_keypoints: (B, U, 3) or (B, 1, U, 3) when there are unique bodyparts.
            identity_scores: (B, N, K, individuals) from an identity head.
            bboxes, bbox_scores: per frame, (D, 4) xywh boxes and (D,) scores (top-down).
        """
        if self._fh is None:
            raise RuntimeError(f"{self.path}: writer already finished or aborted")
        index = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
        kp = np.asarray(keypoints)
        if kp.ndim != 4 or kp.shape[0] != len(index) or kp.shape[2:] != (len(self.bodyparts), 3):
            raise ValueError(f"keypoints must be (B={len(index)}, N, K={len(self.bodyparts)}, "
                             f"3), got {kp.shape}")
        if self.unique_bodyparts and unique_keypoints is None:
            raise ValueError(f"{self.path}: {len(self.unique_bodyparts)} unique bodyparts but "
                             "no unique_keypoints were given")
        if len(index) and (index[0] <= self.last_index or np.any(np.diff(index) <= 0)):
            raise ValueError(f"{self.path}: frame indices must increase (got {index[:3]}... "
                             f"after {self.last_index})")
        record = (index, kp,
                  None if unique_keypoints is None else np.asarray(unique_keypoints),
                  None if identity_scores is None else np.asarray(identity_scores),
                  None if bboxes is None else list(bboxes),
                  None if bbox_scores is None else list(bbox_scores))
        fh = self._fh
        self._guard(lambda: pickle.dump(record, fh, protocol=pickle.HIGHEST_PROTOCOL),
                    "write", self.spool)
        self.n_frames += len(index)
        if len(index):
            self.last_index = int(index[-1])

    def _records(self) -> Iterator[tuple]:
        # The spool holds only what append() wrote in this process.
        with open(self.spool, "rb") as fh:
            while True:
                try:
                    yield pickle.load(fh)
                except EOFError:
                    return

    def _items(self) -> Iterator[tuple[str, Any]]:
        width = key_str_width(self.last_index + 1)
        yield "metadata", full_metadata(self.bodyparts, self.unique_bodyparts, self.decoder,
                                        self.n_frames, width)
        for index, kp, unique, identity, boxes, box_scores in self._records():
            for b, frame in enumerate(index):
                entry = frame_entry(
                    kp[b], None if unique is None else unique[b],
                    None if identity is None else identity[b],
                    None if boxes is None else boxes[b],
                    None if box_scores is None else box_scores[b])
                yield "frame" + str(int(frame)).zfill(width), entry

    def finish(self) -> Path:
        """Write the pickle to ``<path>.part``, flushed to disk; returns that path."""
        if self._finished:
            return self.part
        if self._fh is None:
            raise RuntimeError(f"{self.path}: writer was aborted")
        fh, self._fh = self._fh, None
        self._guard(fh.close, "write", self.spool)

        def dump() -> None:
            with open(self.part, "wb") as out:
                dump_streamed(out, self._items())

        self._guard(dump, "write", self.part)
        self._guard(lambda: fsync_file(self.part), "flush", self.part)
        with contextlib.suppress(FileNotFoundError):
            self.spool.unlink()
        self._finished = True
        return self.part

    def commit(self) -> Path:
        """:meth:`finish`, then atomically move the pickle onto the final path."""
        part = self.finish()
        self._guard(lambda: os.replace(part, self.path), "rename", part)
        return self.path

    def abort(self) -> None:
        """Remove the spool and the partial pickle; ``path`` is left as it was."""
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
        for leftover in (self.spool, self.part):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()



def write_full_pickle(path: str | os.PathLike[str], keypoints: np.ndarray,
                      bodyparts: Sequence[str], unique_bodyparts: Sequence[str] = (),
                      *, frame_indices: np.ndarray | None = None,
                      unique_keypoints: np.ndarray | None = None,
                      identity_scores: np.ndarray | None = None,
                      bboxes: Sequence[np.ndarray] | None = None,
                      bbox_scores: Sequence[np.ndarray] | None = None,
                      decoder: dict[str, Any] | None = None) -> Path:
    """Write a whole run held in memory (``keypoints`` (F, N, K, 3)) atomically to ``path``.

    ``frame_indices`` defaults to ``0..F-1``; the other arrays have F rows (see
    :meth:`FullPickleWriter.append`). Streaming callers use :class:`FullPickleWriter`.
    """
    keypoints = np.asarray(keypoints)
    index = np.arange(len(keypoints)) if frame_indices is None else frame_indices
    with FullPickleWriter(path, bodyparts, unique_bodyparts, decoder) as writer:
        writer.append(index, keypoints, unique_keypoints, identity_scores, bboxes, bbox_scores)
    return Path(path)


__all__ = ["FULL_SUFFIX", "full_pickle_path", "key_str_width", "full_metadata", "frame_entry",
           "FullPickleWriter", "write_full_pickle", "StreamedDict", "dump_streamed"]
