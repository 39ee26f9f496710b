"""``analyze_video``: bundle + video -> DeepLabCut result files, resumable after any crash.

The steps, each in its module:

1. a complete earlier result is kept (:mod:`dlc_runtime.results`);
2. the frames to analyze are resolved (:mod:`dlc_runtime.selection`);
3. a checkpoint of an earlier run of the same bundle, video, selection and backend is resumed,
   any other one is dropped with a line saying why (:mod:`dlc_runtime.checkpoint`);
4. the frames are decoded and analyzed into the checkpoint's rows file, checkpointed as they go
   (:mod:`dlc_runtime.analysis_run`);
5. the ``.h5`` (verified), ``_meta.pickle`` and ``.csv`` are written from the rows and published
   with the completion record; then the checkpoint is removed.

A crash or ``kill -9`` at any point leaves either the checkpoint (the same call resumes) or a
complete, recorded result; never a damaged file under a final name.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dlc_runtime.analysis_result import AnalysisResult
from dlc_runtime.analysis_run import RunOptions, merge_ranges, run_video
from dlc_runtime.analysis_tracking import (finish_tracking, start_tracking, tracking_options,
                                           track_published)
from dlc_runtime.backends.base import Backend
from dlc_runtime.bundle import MANIFEST_NAME, Bundle
from dlc_runtime.checkpoint import Checkpoint, State, crash_point, identity
from dlc_runtime.errors import AnalysisInterrupted, BundleError, OutputError, VideoError
from dlc_runtime.full_pickle import FullPickleWriter, full_pickle_path
from dlc_runtime.manifest import _package_version
from dlc_runtime.outputs import H5Writer, ResultPaths, RowLayout, build_meta, \
    write_csv_from_h5, write_meta_pickle
from dlc_runtime.pipelines.ctd_tracking import CTDTrackingOptions
from dlc_runtime.results import ResultStage, complete_missing, find_complete
from dlc_runtime.selection import FrameSelection, Position, resolve_selection
from dlc_runtime.tracking.options import TrackingOptions
from dlc_runtime.video import VideoIterator

logger = logging.getLogger(__name__)

#: seconds between checkpoints by default: at most a minute of work is lost, whatever the speed
#: of the model (a frame count would mean hours on a CPU and seconds on a GPU).
CHECKPOINT_SECONDS = 60.0


def _say(msg: str, progress: bool) -> None:
    # DeepLabCut talks to the terminal; with progress=False we stay quiet and only log.
    if progress:
        print(msg)
    logger.info(msg)


def _meta_from_record(bundle: Bundle, record: dict[str, Any]) -> dict[str, Any]:
    """The ``_meta.pickle`` data from the facts of a run (kept in the completion record, so a
    deleted meta file can be written again identically)."""
    run = record["run"]
    selection = run.get("selection") or FrameSelection().as_dict()  # older records: all frames
    return build_meta(
        start=run["start"], stop=run["stop"], scorer=bundle.scorer, fps=run["fps"],
        batch_size=run["batch_size"], width=run["width"], height=run["height"],
        nframes=record["n_frames"], bodyparts=bundle.bodyparts,
        unique_bodyparts=bundle.unique_bodyparts, individuals=bundle.individuals,
        pytorch_config=bundle.pytorch_config(),
        iteration=bundle.manifest.source.get("iteration"),
        train_fraction=bundle.manifest.source.get("train_fraction"),
        extra={"dlc-deploy": {"version": run["version"], "bundle": run["bundle"],
                              "backend": run["backend"], "device": run["device"],
                              # records written before the decoder choice existed lack it
                              "decoder": run.get("decoder", "cpu"),
                              "n_frames_metadata": run["n_frames_metadata"]},
               "frame_selection": selection,
               # (first, stop) frame ranges whose rows are NaN: the frames could not be read
               "unreadable_frames": [tuple(r) for r in run.get("unreadable", [])]},
    )


def analyze_video(
    bundle_path: str | os.PathLike[str] | Bundle,
    video_path: str | os.PathLike[str],
    dest_folder: str | os.PathLike[str] | None = None,
    batch_size: int = 8,
    backend: str | Backend = "onnxruntime",
    device: str = "cpu",
    save_as_csv: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    allow_truncated: bool = False,
    prefetch: int = 4,
    backend_options: dict[str, Any] | None = None,
    decoder: str = "auto",
    *,
    start: Position = None,
    stop: Position = None,
    stride: int = 1,
    strict: bool = False,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = CHECKPOINT_SECONDS,
    resume: bool = True,
    track: str | TrackingOptions | None = None,
    n_animals: int | None = None,
    track_options: dict[str, Any] | None = None,
    ctd_tracking: bool | dict[str, Any] | CTDTrackingOptions | None = False,
) -> AnalysisResult:
    """Analyze one video with a bundle and write DeepLabCut-compatible results.

    The ``.h5``, ``_meta.pickle`` and ``.csv`` appear under their final names only once all are
    written and the ``.h5`` reads back exactly as written; the completion record
    ``<video><scorer>_complete.json`` comes last (see :mod:`dlc_runtime.results`). Any write
    failure (a full disk) is an :class:`OutputError` and leaves no file under a final name and
    an earlier result as it was. While it runs, ``<video><scorer>_checkpoint.json`` and
    ``.rows`` let the same call resume after a crash (:mod:`dlc_runtime.checkpoint`).

    Args:
        bundle_path: the bundle folder (or an already loaded :class:`Bundle`).
        video_path: the video.
        dest_folder: where results go (default: the video's folder).
        batch_size: frames per inference call.
        backend: a backend name (see ``dlc_runtime.backends.BACKENDS``) or a ready
            :class:`Backend` (reused across videos; not closed here).
        device: "cpu" or "cuda[:N]".
        save_as_csv: also write ``<stem><scorer>.csv``.
        progress: show a tqdm progress bar and messages.
        overwrite: analyze again even when a complete result exists (it is replaced only once
            the new one is complete). Without it a complete result is kept, and only the
            outputs it lacks are written (from its ``.h5``).
        allow_truncated: with ``strict``, keep the frames of a video that ends before its
            announced length (no rows for the missing ones) instead of failing.
        prefetch: decoded batches kept ready ahead of inference.
        backend_options: extra keyword arguments for the backend factory.
        decoder: "auto" (NVDEC where the backend runs on a GPU and takes device frames and
            PyNvVideoCodec is installed, else OpenCV; one log line says which and why), "cpu"
            or "nvdec" (see :mod:`dlc_runtime.decoders`).
        start, stop: the first frame and the frame to stop before: a frame index (int, or a
            string of digits) or a time (float seconds, "90s", "1:30", "1:02:03.5"); None: the
            video's first / past its last (see :mod:`dlc_runtime.selection`).
        stride: analyze every ``stride``-th frame from ``start``. Rows keep the video's frame
            indices; ``_meta.pickle`` records the selection.
        strict: a frame that cannot be read stops the analysis with a one-line
            :class:`VideoError`. Without it the frames that decode are analyzed and the others
            become rows of NaN (x, y, likelihood), listed in ``_meta.pickle`` as
            ``unreadable_frames``.
        checkpoint_every: also checkpoint every this many rows (None: by time only).
        checkpoint_seconds: checkpoint when this many seconds have passed since the last one
            (None: by rows only; both None: only on Ctrl-C and when decoding ends).
        resume: continue from a matching checkpoint; False starts again (dropping it).
        track: track the animals of a multi-animal bundle: "ellipse", "box" or "skeleton" (or
            a :class:`~dlc_runtime.tracking.options.TrackingOptions`). The tracker follows the
            rows as they are analyzed; once the results are published the tracklets go to
            ``<video><scorer>_el.pickle`` (``_bx``, ``_sk``) and the animals, stitched, to
            ``<video><scorer>_el.h5`` (+ ``.csv`` with ``save_as_csv``). A complete earlier
            result is tracked from its ``.h5`` when its tracks are missing or older.
        n_animals: animals to stitch into (default: the bundle's individuals).
        track_options: tracker parameters (``max_age``, ``min_hits``, ``iou_threshold``...)
            and stitching settings (``min_length``, ``max_gap``...), see
            :class:`~dlc_runtime.tracking.options.TrackingOptions`.
        ctd_tracking: a conditional top-down bundle run as DeepLabCut's CTD tracking: each
            frame's conditions are the previous frame's poses, bottom-up re-seeds (True, or
            :class:`~dlc_runtime.pipelines.ctd_tracking.CTDTrackingOptions` or their dict);
            animal i of the ``.h5`` is the same animal throughout. The tracks are saved with
            each checkpoint, so a resumed run continues them exactly.

    Returns:
        An :class:`AnalysisResult`; ``result.h5_path`` is the ``.h5``.

    Raises:
        AnalysisInterrupted: Ctrl-C; a checkpoint was saved and the same call resumes.
        SelectionError: ``start`` / ``stop`` / ``stride`` select no frame of the video.
    """
    bundle = bundle_path if isinstance(bundle_path, Bundle) else Bundle.load(bundle_path)
    video_path = Path(video_path)
    paths = ResultPaths.for_video(video_path, bundle.scorer, dest_folder)
    tracking = tracking_options(bundle, track, n_animals, track_options)
    ctd = CTDTrackingOptions.build(ctd_tracking)
    if ctd is not None and bundle.task != "cond_top_down":
        raise BundleError(f"CTD tracking needs a conditional top-down bundle; {bundle.path} is "
                          f"{bundle.task}: drop ctd_tracking (or use track=...)")

    record = None if overwrite else find_complete(paths)
    if record is not None:
        Checkpoint.drop_published(paths.checkpoint, paths.checkpoint_rows,
                                  record.get("run", {}).get("rows_digest"))
        done = _guard_output(lambda: complete_missing(
            paths, record, save_as_csv,
            write_meta=lambda path, rec: write_meta_pickle(path, _meta_from_record(bundle, rec))),
            paths)
        logger.info("%s already analyzed at %s", video_path, paths.h5)
        tracked = track_published(bundle, tracking, paths, save_as_csv) if tracking else None
        return AnalysisResult(paths.h5, done.n_frames, 0.0, 0.0, skipped=True,
                              csv_path=paths.csv if paths.csv.is_file() else None,
                              meta_path=paths.meta, added=done.added, video=video_path,
                              tracking=tracked)

    # Open the video before the backend: a bad file should fail in milliseconds, not after
    # loading a model onto a GPU. The decoder that reads it is chosen once the backend says
    # whether it takes device frames.
    probe = VideoIterator(video_path, batch_size=1, allow_truncated=True)
    probe.close()
    selection = resolve_selection(start, stop, stride, fps=probe.fps, n_frames=probe.n_frames,
                                  video=video_path)
    layout = RowLayout(bundle.scorer, bundle.bodyparts, bundle.individuals,
                       bundle.unique_bodyparts, bundle.multi_animal)
    run = {"backend": backend if isinstance(backend, str) else backend.name, "device": device,
           "decoder": decoder, "backend_options": backend_options or {}, "strict": strict,
           "allow_truncated": allow_truncated}
    if ctd is not None:  # its tracks are in the rows: another setting, other rows
        run["ctd_tracking"] = asdict(ctd)
    ckpt = Checkpoint(paths.checkpoint, paths.checkpoint_rows,
                      identity(bundle.path / MANIFEST_NAME, video_path, selection.as_dict(), run),
                      layout.n_values, checkpoint_every, checkpoint_seconds)
    unrecorded = paths.h5.exists() and not overwrite
    if unrecorded:
        _say(f"{paths.h5} has no completion record (an interrupted run, or another tool's "
             "result): it is replaced once the new result is complete", progress)
    state = _resume_or_start(ckpt, resume, paths, selection, video_path, progress)
    tracker = start_tracking(bundle, tracking, ckpt, layout, state) if tracking else None

    stats = None
    if state is None or not state.done:
        opts = RunOptions(batch_size=batch_size, backend=backend, device=device,
                          prefetch=prefetch, backend_options=backend_options, decoder=decoder,
                          strict=strict, allow_truncated=allow_truncated, progress=progress,
                          ctd_tracking=ctd)
        stats = run_video(bundle, video_path, selection, ckpt, state, layout, opts,
                          lambda msg: _say(msg, progress))
    saved = ckpt.saved
    assert saved is not None  # run_video saved a finished checkpoint, or it was found done
    if saved.unreadable and overwrite:
        _keep_better_result(paths, saved, video_path, ckpt)
    try:
        record = _publish(bundle, video_path, paths, ckpt, saved, selection, save_as_csv, device)
    except KeyboardInterrupt:
        ckpt.close()
        raise AnalysisInterrupted(
            f"writing the results of {video_path} was interrupted; the analysis is finished "
            f"and kept in {ckpt.state_path.name}: run the same command again to write them",
            video=video_path, frame=saved.next_frame, checkpoint=ckpt.state_path) from None
    tracked = finish_tracking(bundle, tracker, paths, save_as_csv) if tracker else None

    seconds = stats.seconds if stats else 0.0
    fps = stats.frames / seconds if stats and seconds > 0 else 0.0
    logger.info("analyzed %d frames of %s in %.1f s (%.1f frames/s) -> %s", saved.rows,
                video_path, seconds, fps, paths.h5)
    return AnalysisResult(paths.h5, record["n_frames"], seconds, fps,
                          csv_path=paths.csv if save_as_csv else None, meta_path=paths.meta,
                          video=video_path, replaced_unrecorded=unrecorded,
                          resumed_from=state.next_frame if state is not None else None,
                          unreadable=sum(len(range(a, b, selection.stride))
                                         for a, b in saved.unreadable), tracking=tracked)


def _resume_or_start(ckpt: Checkpoint, resume: bool, paths: ResultPaths,
                     selection: FrameSelection, video_path: Path, progress: bool
                     ) -> State | None:
    """The checkpoint to continue from (None: a fresh start), said in one line either way, and
    the checkpoint opened for writing."""
    state, why = ckpt.load() if resume else (None, None)
    name = ckpt.state_path.name
    if state is not None:
        doing = "writing the results from its rows" if state.done else \
            f"resuming at frame {state.next_frame}"
        _say(f"{video_path}: {doing} ({state.rows} rows in the checkpoint {name})", progress)
    elif why:
        _say(f"{video_path}: not resuming the checkpoint {name}: {why}; analyzing from the "
             "start", progress)
    elif not resume and ckpt.state_path.exists():
        _say(f"{video_path}: dropping the checkpoint {name} (resume=False)", progress)
    if state is None:
        ckpt.discard()
    _guard_output(lambda: paths.h5.parent.mkdir(parents=True, exist_ok=True), paths)
    ckpt.start(state, selection.start)
    if state is None:
        ckpt.info["start"] = time.time()
    return state


def _unreadable_frames(ranges: list[Any]) -> int:
    return sum(int(b) - int(a) for a, b in ranges)


def _keep_better_result(paths: ResultPaths, saved: State, video_path: Path,
                        ckpt: Checkpoint) -> None:
    """Refuse to replace a complete result by one with more frames that could not be read (the
    video was damaged since, or copied badly); the finished analysis stays in its checkpoint."""
    earlier = find_complete(paths)
    if earlier is None:
        return
    before = _unreadable_frames(earlier.get("run", {}).get("unreadable", []))
    now = _unreadable_frames(saved.unreadable)
    if now > before:
        ckpt.close()
        raise VideoError(f"{video_path}: {now} frames could not be read, so the earlier complete "
                         f"result {paths.h5.name} ({before} unreadable) is kept; repair or "
                         "re-copy the video, or delete that result and run the same command "
                         f"again to publish this analysis (kept in {ckpt.state_path.name})")


def _publish(bundle: Bundle, video_path: Path, paths: ResultPaths, ckpt: Checkpoint, saved: State,
             selection: FrameSelection, save_as_csv: bool, device: str) -> dict[str, Any]:
    """Write the results from the checkpoint's rows, publish them with their record, and
    remove the checkpoint. A failure leaves the checkpoint: the rerun only writes again."""
    info = saved.info
    # Multi-animal runs also get DeepLabCut's _full.pickle, renamed in after the others.
    full = FullPickleWriter.for_bundle(full_pickle_path(paths.h5), bundle) \
        if bundle.multi_animal else None
    layout = RowLayout(bundle.scorer, bundle.bodyparts, bundle.individuals,
                       bundle.unique_bodyparts, bundle.multi_animal)
    with ResultStage(paths) as stage:
        def write_h5() -> H5Writer:
            stage.part("h5")  # the writer streams to this .part file
            writer = H5Writer(paths.h5, bundle.scorer, bundle.bodyparts, bundle.individuals,
                              bundle.unique_bodyparts, bundle.multi_animal)
            try:
                for index, values in ckpt.rows():
                    writer.append_rows(index, values)
                    if full is not None:
                        full.append(index, *layout.keypoints(values))
                writer.finish()  # reads the .part back; published below with the other files
                if full is not None:
                    full.finish()
            except BaseException:
                writer.abort()
                if full is not None:
                    full.abort()
                raise
            return writer

        writer = _guard_output(write_h5, paths)
        record = {
            "n_frames": writer.n_rows,
            "video": str(video_path),
            "run": {"start": info["start"], "stop": info["stop"], "fps": info["fps"],
                    "batch_size": info["batch_size"], "width": info["width"],
                    "height": info["height"], "n_frames_metadata": info["n_frames_metadata"],
                    "version": _package_version(), "bundle": str(bundle.path),
                    # A pipeline running several graphs names what ran each.
                    "backend": info["backend"], "device": device, "decoder": info["decoder"],
                    "selection": selection.as_dict(),
                    "unreadable": merge_ranges(saved.unreadable, selection.stride),
                    # tells a leftover checkpoint of these very rows from a newer one
                    "rows_digest": saved.digest},
        }

        def write_rest() -> dict[str, Any]:
            write_meta_pickle(stage.part("meta"), _meta_from_record(bundle, record))
            if save_as_csv:
                write_csv_from_h5(stage.staged["h5"], stage.part("csv"))
            return stage.publish(record)

        try:
            _guard_output(write_rest, paths)
        except BaseException:
            if full is not None:
                full.abort()
            raise
    if full is not None:
        full.commit()
    crash_point("published")
    ckpt.discard()
    return record


def _guard_output(action, paths: ResultPaths):
    """Runs a step that writes results; an OSError (full disk, no permission) becomes one
    OutputError line. Staged files are removed by the caller's ResultStage."""
    try:
        return action()
    except OSError as err:
        reason = err.strerror or str(err)
        where = err.filename or paths.h5.parent
        raise OutputError(f"cannot write the results {paths.h5.name} in {paths.h5.parent}: "
                          f"{reason} ({where}); nothing was written under the final "
                          "names") from err
