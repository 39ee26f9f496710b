"""Bottom-up multi-animal pipeline for PAF bundles: peaks in the graph, assembly on the host.

The graph (``decoder.type: paf``) returns fixed-size candidates: ``peaks`` (B, K, P, 2),
``scores`` (B, K, P), ``peak_index`` (B, K, P) and ``affinities`` (B, E, P, P). Grouping them into
animals is a greedy, data-dependent search, so it runs here with numpy
(:class:`~dlc_runtime.postprocess.paf_assembly.PafAssembler`, the code ``dlc_train`` evaluates
with). With an identity head the graph also returns ``peak_identity`` (B, K, P, num_ids) and the
animals are ordered by identity after assembly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dlc_runtime.errors import BundleError
from dlc_runtime.pipelines.base import PoseResult, register_pipeline
from dlc_runtime.pipelines.bottom_up import BottomUpPipeline
from dlc_runtime.postprocess.identity import reorder_by_identity, scores_at_peaks
from dlc_runtime.postprocess.paf_assembly import PafAssembler

if TYPE_CHECKING:
    from dlc_runtime.backends.base import Backend
    from dlc_runtime.bundle import Bundle

PAF_OUTPUTS = ("peaks", "scores", "peak_index", "affinities")
PEAK_IDENTITY = "peak_identity"


@register_pipeline("bottom_up", decoder="paf")
class BottomUpPafPipeline(BottomUpPipeline):
    """Runs a PAF bundle's pose graph and assembles animals on the host.

    Args:
        bundle: a ``bottom_up`` bundle with ``decoder.type: paf``.
        backend: the backend running its ``pose`` graph (None: host steps only).
    """

    required_outputs = PAF_OUTPUTS

    def __init__(self, bundle: Bundle, backend: Backend | None) -> None:
        super().__init__(bundle, backend)
        decoder = bundle.manifest.decoder
        try:
            self.assembler = PafAssembler(
                graph=decoder["graph"], edges_to_keep=decoder["edges_to_keep"],
                num_animals=int(decoder["num_animals"]), num_multibodyparts=self.n_bodyparts,
                min_affinity=float(decoder.get("min_affinity", 0.05)),
                clip_scores=bool(decoder.get("clip_scores", False)))
        except (KeyError, TypeError, ValueError) as err:
            raise BundleError(f"{bundle.path}: the PAF decoder section is incomplete or invalid "
                              f"({type(err).__name__}: {err}); re-export the bundle") from None
        if self.assembler.num_animals < self.n_individuals:
            raise BundleError(f"{bundle.path}: decoder.num_animals "
                              f"({self.assembler.num_animals}) is smaller than the "
                              f"{self.n_individuals} individuals; re-export the bundle")
        self.has_identity = bundle.graph("pose").output(PEAK_IDENTITY) is not None

    def postprocess(self, outputs: dict[str, np.ndarray], n_valid: int) -> PoseResult:
        peaks, scores, peak_index, affinities = (outputs[n][:n_valid] for n in PAF_OUTPUTS)
        poses = self.assembler(peaks, scores, peak_index, affinities)["poses"]
        if self.has_identity and PEAK_IDENTITY in outputs:
            identity = scores_at_peaks(poses, peaks, outputs[PEAK_IDENTITY][:n_valid])
            poses = reorder_by_identity(poses, identity)
        return PoseResult(keypoints=poses.astype(np.float32, copy=False),
                          unique_keypoints=self._unique(outputs, n_valid))
