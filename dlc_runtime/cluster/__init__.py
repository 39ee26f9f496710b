"""Many videos on many GPUs and machines, on Ray (see docs/cluster.md).

``analyze_videos_on_ray(bundle, videos, ...)`` runs one worker per GPU (or per CPU slot), each
loading the bundle once, over whole videos or segments of long ones; results are written by the
local run's own resumable writers, so a cluster run gives the ``.h5`` a local run gives. Ray is
an optional extra (``pip install "dlc-deploy[cluster]"``), imported only when a run starts.

Modules: ``plan`` (work items, segments), ``worker`` (the actor), ``join`` (segments -> one
result), ``driver`` (scheduling, retries, progress), ``summary`` (the outcomes and table).
"""
from dlc_runtime.cluster.driver import (RAY_MISSING, ClusterError, analyze_videos_on_ray,
                                        import_ray)
from dlc_runtime.cluster.plan import MIN_SEGMENT_FRAMES, WorkItem
from dlc_runtime.cluster.summary import ClusterOutcome, ClusterSummary

__all__ = ["analyze_videos_on_ray", "ClusterError", "ClusterOutcome", "ClusterSummary",
           "MIN_SEGMENT_FRAMES", "RAY_MISSING", "WorkItem", "import_ray"]
