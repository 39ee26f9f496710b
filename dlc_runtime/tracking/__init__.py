"""Multi-animal tracking: trackers linking per-frame animals into tracklets (streamed), stitching
tracklets into animals (min-cost flow), and DeepLabCut's ``_el`` / ``_bx`` / ``_sk`` files."""
from dlc_runtime.tracking.el_format import (TRACK_METHODS, TrackletsFile, read_stitched_h5,
                                            read_tracklets_pickle,
                                            stitched_frame, stitched_h5_path, tracklets_header,
                                            tracklets_pickle_path, write_stitched_h5,
                                            write_tracklets_pickle)
from dlc_runtime.tracking.stitch import (EdgeCost, StitchResult, compute_max_gap,
                                         prepare_tracklets, stitch_tracklets)
from dlc_runtime.tracking.trackers import (TRACKERS, BoxTracker, EllipseTracker, SkeletonTracker,
                                           SortTracker, make_tracker)
from dlc_runtime.tracking.tracklet_store import Tracklets
from dlc_runtime.tracking.tracklets import Tracklet, join_all

__all__ = ["TRACKERS", "BoxTracker", "EllipseTracker", "SkeletonTracker", "SortTracker",
           "Tracklets", "make_tracker", "Tracklet", "join_all", "TRACK_METHODS",
           "stitch_tracklets", "StitchResult", "EdgeCost", "prepare_tracklets", "compute_max_gap",
           "TrackletsFile", "tracklets_pickle_path", "stitched_h5_path", "tracklets_header",
           "write_tracklets_pickle", "read_tracklets_pickle", "stitched_frame",
           "write_stitched_h5", "read_stitched_h5"]
