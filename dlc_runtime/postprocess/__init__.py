"""Host-side post-processing that is not tensor work (numpy only, no torch).

``dlc_train`` imports these modules too (a documented exception to its dependency rule, see
docs/architecture.md): training evaluation and deployment must run the very same assembly and
identity code.
"""

from dlc_runtime.postprocess.identity import assign_identity, reorder_by_identity, scores_at_peaks
from dlc_runtime.postprocess.paf_assembly import PafAssembler, linear_sum_assignment

__all__ = ["PafAssembler", "linear_sum_assignment", "assign_identity", "reorder_by_identity",
           "scores_at_peaks"]
