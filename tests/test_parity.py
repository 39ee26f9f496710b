"""The parity gate: which keypoints an artifact must match, and what its report records."""
from __future__ import annotations

import numpy as np
import pytest

from dlc_export.parity import (
    DEFAULT_PCUTOFF,
    REDUCED_PRECISION_TOLERANCE_PX,
    ParityGate,
    keypoint_errors,
    parity_report,
    project_pcutoff,
)


def _keypoints() -> tuple[np.ndarray, np.ndarray]:
    """(2 frames, 3 keypoints, x/y/likelihood): the candidate moves one confident keypoint by
    0.3 px and one low-likelihood keypoint (a near-flat heatmap) by 10 px."""
    ref = np.array([[[10, 10, 0.9], [20, 20, 0.3], [30, 30, 0.8]],
                    [[11, 11, 0.95], [21, 21, 0.7], [np.nan, np.nan, 0.0]]], np.float32)
    cand = ref.copy()
    cand[0, 0, 0] += 0.3
    cand[0, 1, :2] += (6.0, 8.0)  # 10 px, likelihood 0.3
    return ref, cand


def report(gate):
    ref, cand = _keypoints()
    return parity_report(ref, cand, frames=2, frame_size=(64, 64), source="test", backend="b",
                         gate=gate)


def test_fp32_gates_every_keypoint():
    gate = ParityGate.for_precision("fp32", 0.5, pcutoff=0.6)
    assert gate == ParityGate(0.5, None)
    r = report(gate)
    assert r.max_px == pytest.approx(10.0) and r.passed is False
    assert r.min_likelihood is None and r.gated_max_px is None
    assert report(11.0).passed is True  # a plain tolerance gates every keypoint too


def test_reduced_precision_gates_the_detected_keypoints_only():
    gate = ParityGate.for_precision("fp16", 0.5, pcutoff=0.6)
    assert gate == ParityGate(REDUCED_PRECISION_TOLERANCE_PX["fp16"], 0.6)
    r = report(gate)
    # The 10 px keypoint has reference likelihood 0.3 < pcutoff: reported, not gated.
    assert r.max_px == pytest.approx(10.0)
    assert r.gated_max_px == pytest.approx(0.3, abs=1e-5)
    assert r.passed is True and r.min_likelihood == 0.6
    assert "likelihood >= 0.6: max 0.3000 px" in r.summary()
    # The same error on a detected keypoint fails, and a lower pcutoff detects it.
    assert report(ParityGate.for_precision("fp16", 0.5, pcutoff=0.25)).passed is False
    assert ParityGate.for_precision("int8", 0.5).tolerance_px == 8.0
    assert ParityGate.for_precision("fp16", 6.0).tolerance_px == 6.0  # a wider export gate wins


def test_missing_keypoints_count_once_missing_on_one_side():
    ref, cand = _keypoints()
    px, _ = keypoint_errors(ref, cand)
    assert px[1, 2] == 0.0  # NaN on both sides: equal
    cand[1, 0, :2] = np.nan
    r = parity_report(ref, cand, frames=2, frame_size=(64, 64), source="t", backend="b",
                      gate=ParityGate.for_precision("fp16", 0.5, 0.6))
    assert r.gated_max_px == np.inf and r.passed is False


@pytest.mark.parametrize("value, expected", [(0.4, 0.4), ("0.7", 0.7), (None, DEFAULT_PCUTOFF),
                                             ("high", DEFAULT_PCUTOFF), (3, DEFAULT_PCUTOFF)])
def test_project_pcutoff(value, expected):
    assert project_pcutoff({"pcutoff": value}) == expected
    assert project_pcutoff(None) == DEFAULT_PCUTOFF


def test_a_gate_on_detected_keypoints_gates_all_when_none_is_detected():
    """No keypoint reaches pcutoff (an untrained model): no evidence to be lenient on."""
    ref, cand = _keypoints()
    ref[..., 2] = 0.1
    r = parity_report(ref, cand, frames=2, frame_size=(64, 64), source="t", backend="b",
                      gate=ParityGate.for_precision("fp16", 0.5, 0.6))
    assert r.min_likelihood is None and r.gated_max_px is None
    assert r.passed is False and r.max_px == pytest.approx(10.0)
