"""Asynchronous batches: Backend.submit, Pipeline.submit, stream_poses and the stage clock.

An asynchronous backend (torch on CUDA) returns from ``submit`` before its outputs exist; the
analysis loop keeps one batch in flight beside the one it reads. Here a backend that defers its
work until ``result()`` stands in for the GPU: it checks that results come back in order and
equal to the synchronous ones, that no more batches are in flight than the loop allows, and
that a device batch reaches host-only backends as a host copy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dlc_runtime import Bundle, analyze_video, make_backend
from dlc_runtime.backends.base import check_inputs
from dlc_runtime.benchmark.stages import StageClock, TimedBackend
from dlc_runtime.pipelines.base import PendingPose, PoseResult, make_pipeline, stream_poses
from dlc_runtime.testing import make_test_video, make_toy_bundle, toy_keypoints
from helpers.deferred import DeferredBackend

BODYPARTS = ["snout", "tailbase"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Bundle:
    return Bundle.load(make_toy_bundle(tmp_path_factory.mktemp("b") / "toy.bundle",
                                       bodyparts=BODYPARTS))


def _batches(n_frames: int, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (n_frames, 24, 32, 3), dtype=np.uint8)
    return [(np.arange(i, min(i + batch, n_frames)), frames[i:i + batch])
            for i in range(0, n_frames, batch)], frames


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_stream_poses_keeps_order_and_depth(bundle, depth):
    batches, frames = _batches(23, 4)
    backend = DeferredBackend(make_backend(bundle))
    pipeline = make_pipeline(bundle, backend)
    out = list(stream_poses(pipeline, batches, depth=depth))
    assert [list(i) for i, _ in out] == [list(i) for i, _ in batches]
    keypoints = np.concatenate([r.keypoints for _, r in out])
    np.testing.assert_allclose(keypoints, toy_keypoints(frames, len(BODYPARTS)), atol=1e-4)
    assert backend.most_in_flight == depth + 1 and backend.in_flight == 0
    assert backend.submitted == len(batches)


def test_pipeline_submit_defers_postprocess_and_splits(bundle):
    backend = DeferredBackend(make_backend(bundle))
    pipeline = make_pipeline(bundle, backend)
    big = pipeline.batch.max + 3
    _, frames = _batches(big, big, seed=1)
    pending = pipeline.submit(frames)
    assert isinstance(pending, PendingPose) and backend.in_flight == 2  # split in two batches
    result = pending.result()
    assert backend.in_flight == 0 and result is pending.result()  # collected once
    np.testing.assert_allclose(result.keypoints, toy_keypoints(frames, len(BODYPARTS)),
                               atol=1e-4)


def test_device_batch_reaches_a_host_backend_as_a_copy(bundle):
    _, frames = _batches(5, 5, seed=2)
    as_tensor = torch.from_numpy(frames.copy())  # a stand-in device batch (not numpy)
    feed = check_inputs(["images"], as_tensor, {})
    assert isinstance(feed["images"], np.ndarray)
    np.testing.assert_array_equal(feed["images"], frames)
    with make_backend(bundle) as backend:
        pipeline = make_pipeline(bundle, backend)
        assert not pipeline.accepts_device_frames
        np.testing.assert_allclose(pipeline(as_tensor).keypoints, pipeline(frames).keypoints)


def test_timed_backend_splits_upload_from_inference(bundle):
    clock = StageClock()
    sync = TimedBackend(make_backend(bundle), clock)
    _, frames = _batches(4, 4)
    pending = sync.submit(frames)
    assert pending.done and clock.take_upload() == 0.0 and clock.take_inference() > 0

    deferred = TimedBackend(DeferredBackend(make_backend(bundle)), clock)
    pending = deferred.submit(frames)
    assert not pending.done and clock.take_inference() == 0.0
    assert clock.take_upload() > 0
    pending.result()
    assert clock.take_inference() > 0  # the wait for the outputs


def test_analyze_video_through_an_asynchronous_backend(bundle, tmp_path: Path):
    video = make_test_video(tmp_path / "clip.mp4", n_frames=19)
    backend = DeferredBackend(make_backend(bundle))
    deferred = analyze_video(bundle, video, tmp_path / "async", batch_size=4, backend=backend,
                             progress=False)
    plain = analyze_video(bundle, video, tmp_path / "sync", batch_size=4, progress=False)
    a = pd.read_hdf(deferred.h5_path, "df_with_missing").to_numpy()
    b = pd.read_hdf(plain.h5_path, "df_with_missing").to_numpy()
    assert a.shape == (19, 6)
    np.testing.assert_array_equal(a, b)
    assert backend.most_in_flight == 2  # one batch read, one in flight


def test_concat_of_pending_results_keeps_unique_keypoints():
    from dlc_runtime.pipelines.base import concat_results

    parts = [PoseResult(np.zeros((2, 1, 3, 3), np.float32), np.ones((2, 1, 3), np.float32)),
             PoseResult(np.ones((1, 1, 3, 3), np.float32), np.zeros((1, 1, 3), np.float32))]
    joined = concat_results(parts)
    assert joined.keypoints.shape == (3, 1, 3, 3) and joined.unique_keypoints.shape == (3, 1, 3)
    assert concat_results([PoseResult(np.zeros((1, 1, 3, 3)))]).unique_keypoints is None
