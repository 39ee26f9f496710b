"""Tracking inside ``analyze_video``: the tracker follows the checkpoint's rows as they are
appended (on the host, while the backend computes the next batch), replays the rows of a
resumed checkpoint first, and writes the ``_el`` files once the analysis is published.

A finished analysis whose tracks are missing or older than it (a crash after publishing, or
tracking asked for on a rerun) is tracked from its ``.h5``: the same rows in the same order,
hence the same tracks, without running the network again.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlc_runtime.bundle import Bundle
from dlc_runtime.checkpoint import Checkpoint, State
from dlc_runtime.errors import BundleError, OutputError, TrackingError
from dlc_runtime.outputs import ResultPaths, RowLayout
from dlc_runtime.tracking.el_format import stitched_h5_path
from dlc_runtime.tracking.options import TrackingOptions
from dlc_runtime.tracking.track_results import track_h5
from dlc_runtime.tracking.video_tracker import TrackingOutputs, VideoTracker, write_tracking

#: graph outputs of an identity head (the pipelines order each frame's animals by identity).
IDENTITY_OUTPUTS = ("identity_scores", "peak_identity")


def has_identity_head(bundle: Bundle) -> bool:
    """The bundle's pose graph scores identities, so animal slot i is individual i."""
    graph = bundle.graph("pose")
    return any(graph.output(name) is not None for name in IDENTITY_OUTPUTS)


def tracking_options(bundle: Bundle, track: str | TrackingOptions | None,
                     n_animals: int | None = None,
                     track_options: Mapping[str, Any] | None = None
                     ) -> TrackingOptions | None:
    """The options ``analyze_video``'s arguments ask for (None: no tracking); one line when
    the bundle cannot be tracked."""
    if track is None or track is False:
        if n_animals is not None or track_options:
            raise TrackingError("n_animals and track_options need track= (ellipse, box or "
                             "skeleton)")
        return None
    if not bundle.multi_animal:
        raise BundleError(f"{bundle.path} is a single-animal bundle: there are no identities "
                          "to track (drop --track)")
    if isinstance(track, TrackingOptions):
        if n_animals is not None or track_options:
            raise TrackingError("pass n_animals and track options inside the TrackingOptions")
        options = track
    else:
        options = TrackingOptions.from_settings(str(track), n_animals, track_options)
    if options.identity_only and not has_identity_head(bundle):
        raise TrackingError(f"identity_only needs a model with an identity head; {bundle.path} "
                            "has none: track with a tracker instead")
    return options


def start_tracking(bundle: Bundle, options: TrackingOptions, ckpt: Checkpoint,
                   layout: RowLayout, resumed: State | None) -> VideoTracker:
    """A tracker fed every row the checkpoint gets; a resumed checkpoint's rows first."""
    tracker = VideoTracker(options, identity_slots=has_identity_head(bundle))

    def take(index, values) -> None:
        if ckpt.mark.rows == 0 and tracker.rows:  # the analysis started again from scratch
            tracker.reset()
        tracker.add(index, *layout.keypoints(values))

    if resumed is not None:
        for index, values in ckpt.rows(keep_open=True):
            take(index, values)
    ckpt.on_append = take
    return tracker


def finish_tracking(bundle: Bundle, tracker: VideoTracker, paths: ResultPaths,
                    save_as_csv: bool) -> TrackingOutputs:
    """Write the tracking files of a published analysis."""
    return _guard(lambda: write_tracking(
        tracker.finish(), paths.h5, bundle.scorer, bundle.bodyparts, bundle.unique_bodyparts,
        bundle.individuals, tracker.options, save_as_csv), paths)


def track_published(bundle: Bundle, options: TrackingOptions, paths: ResultPaths,
                    save_as_csv: bool) -> TrackingOutputs | None:
    """Track a complete earlier result whose tracks are missing or older than it; None when
    they are up to date."""
    tracks = stitched_h5_path(paths.h5, options.method)
    if tracks.is_file() and tracks.stat().st_mtime >= paths.record.stat().st_mtime:
        return None
    return _guard(lambda: track_h5(paths.h5, options, has_identity_head(bundle), save_as_csv),
                  paths)


def _guard(action, paths: ResultPaths) -> TrackingOutputs:
    try:
        return action()
    except OutputError as err:
        raise OutputError(f"the analysis results {Path(paths.h5).name} are written, but not "
                          f"its tracks: {err}") from err
