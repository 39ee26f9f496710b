"""Toy bundles and videos for tests and demos (no trained model needed).

The toy pose graph maps each frame to keypoints that are a known function of its pixels, so a test
can check the whole chain (decode -> RGB order -> backend -> writer) against exact numbers:

- x = mean of all pixel values of the frame, y = mean of its red channel,
  likelihood = mean of its blue channel / 255;
- bodypart k adds ``k`` to x and y, so bodyparts are distinguishable.

Building the graph needs the ``onnx`` package (imported here only, never by the runtime proper).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from dlc_runtime.bundle import (BatchRange, GraphSpec, InputSpec, Manifest, TensorSpec,
                                write_manifest)

TOY_SCORER = "DLC_Toy_testOct30shuffle1_snapshot_001"


def toy_keypoints(frames_rgb: np.ndarray, n_bodyparts: int = 2) -> np.ndarray:
    """NumPy reference of the toy graph: (B, H, W, 3) uint8 RGB -> (B, 1, K, 3) float32."""
    f = frames_rgb.astype(np.float32)
    x = f.mean(axis=(1, 2, 3))
    y = f[..., 0].mean(axis=(1, 2))
    p = f[..., 2].mean(axis=(1, 2)) / 255.0
    base = np.stack([x, y, p], axis=-1)[:, None, None, :]  # (B, 1, 1, 3)
    offs = np.zeros((1, 1, n_bodyparts, 3), np.float32)
    offs[..., 0] = offs[..., 1] = np.arange(n_bodyparts, dtype=np.float32)[None, None, :]
    return (base + offs).astype(np.float32)


def toy_onnx_model(n_bodyparts: int = 2, height: int | None = None, width: int | None = None):
    """The toy pose graph as an ``onnx.ModelProto`` (input ``images``, output ``keypoints``)."""
    import onnx
    from onnx import TensorProto, helper

    h = height if height is not None else "height"
    w = width if width is not None else "width"
    offs = np.zeros((1, 1, n_bodyparts, 3), np.float32)
    offs[..., 0] = offs[..., 1] = np.arange(n_bodyparts, dtype=np.float32)[None, None, :]
    inits = [
        helper.make_tensor("offsets", TensorProto.FLOAT, offs.shape, offs.ravel()),
        helper.make_tensor("r_start", TensorProto.INT64, [1], [0]),
        helper.make_tensor("b_start", TensorProto.INT64, [1], [2]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("three", TensorProto.INT64, [1], [3]),
        helper.make_tensor("ch_axis", TensorProto.INT64, [1], [3]),
        helper.make_tensor("inv255", TensorProto.FLOAT, [], [1.0 / 255.0]),
    ]
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["x"], axes=[1, 2, 3], keepdims=1),  # (B,1,1,1)
        helper.make_node("Slice", ["f", "r_start", "one", "ch_axis"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["y"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Slice", ["f", "b_start", "three", "ch_axis"], ["b"]),
        helper.make_node("ReduceMean", ["b"], ["b_mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["b_mean", "inv255"], ["p"]),
        helper.make_node("Concat", ["x", "y", "p"], ["xyp"], axis=3),  # (B,1,1,3)
        helper.make_node("Add", ["xyp", "offsets"], ["keypoints"]),  # (B,1,K,3)
    ]
    graph = helper.make_graph(
        nodes, "toy_pose",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", h, w, 3])],
        [helper.make_tensor_value_info("keypoints", TensorProto.FLOAT,
                                       ["batch", 1, n_bodyparts, 3])],
        initializer=inits,
    )
    # opset 13 / IR 7: old enough for any onnxruntime >= 1.17.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def make_toy_bundle(bundle_dir: str | os.PathLike[str],
                    bodyparts: Sequence[str] = ("snout", "tailbase"),
                    scorer: str = TOY_SCORER, batch: tuple[int, int, int] = (1, 8, 64),
                    height: int | None = None, width: int | None = None) -> Path:
    """Write a toy bottom-up single-animal bundle (``pose.onnx`` + ``manifest.yaml``)."""
    import onnx

    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    k = len(bodyparts)
    onnx.save(toy_onnx_model(k, height, width), str(bundle_dir / "pose.onnx"))
    h = height if height is not None else "height"
    w = width if width is not None else "width"
    manifest = Manifest(
        task="bottom_up",
        scorer=scorer,
        bodyparts=list(bodyparts),
        individuals=["animal"],
        input=InputSpec(height=height, width=width, batch=BatchRange(*batch)),
        decoder={"type": "toy"},
        graphs={"pose": GraphSpec(
            file="pose.onnx", opset=13,
            inputs=[TensorSpec("images", "uint8", ["batch", h, w, 3])],
            outputs=[TensorSpec("keypoints", "float32", ["batch", 1, k, 3])],
        )},
        source={"snapshot": None, "net_type": "toy"},
    )
    write_manifest(bundle_dir, manifest)
    return bundle_dir


def frame_color(i: int) -> tuple[int, int, int]:
    """RGB colour of frame ``i`` of :func:`make_test_video` (distinct channels, varies by frame)."""
    return (20 + 9 * i) % 256, (200 - 5 * i) % 256, (60 + 3 * i) % 256


def make_test_video(path: str | os.PathLike[str], n_frames: int = 20, width: int = 64,
                    height: int = 48, fps: float = 10.0, fourcc: str = "mp4v") -> Path:
    """Write a video of uniformly coloured frames (``frame_color(i)``), robust to lossy codecs."""
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} video {path}")
    try:
        for i in range(n_frames):
            r, g, b = frame_color(i)
            frame = np.empty((height, width, 3), np.uint8)
            frame[:] = (b, g, r)  # OpenCV writes BGR
            writer.write(frame)
    finally:
        writer.release()
    return path
