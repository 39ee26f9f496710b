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


#: Side of the square pixel block that carries one value in a coded video.
CODE_BLOCK = 8


def coded_frame_size(n_animals: int, n_bodyparts: int) -> tuple[int, int]:
    """(height, width) of the frames of :func:`write_coded_video`."""
    return CODE_BLOCK, CODE_BLOCK * n_animals * n_bodyparts * 3


def write_coded_video(path: str | os.PathLike[str], keypoints: np.ndarray,
                      fps: float = 30.0) -> Path:
    """A lossless video whose frames carry ``keypoints`` (F, N, K, 3) in pixel blocks, for
    :func:`make_toy_multi_animal_bundle`: each value is one grey block, x and y as ``x + 1``
    (0..254 px, rounded), likelihood as ``255 * p``; a NaN animal is written as DeepLabCut's
    padding (x = y = -1, likelihood 0), which the runtime reads back as NaN."""
    kp = np.asarray(keypoints, dtype=np.float64).copy()
    f, n, k, _ = kp.shape
    missing = np.isnan(kp[..., :2]).any(axis=-1)
    kp[missing] = (-1.0, -1.0, 0.0)
    if (kp[..., :2] < -1).any() or (kp[..., :2] > 254).any():
        raise ValueError("coded keypoints must lie in 0..254 pixels")
    codes = np.concatenate([kp[..., :2] + 1, kp[..., 2:] * 255], axis=-1)
    codes = np.clip(np.rint(codes), 0, 255).astype(np.uint8).reshape(f, -1)
    height, width = coded_frame_size(n, k)
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an FFV1 video at {path}")
    try:
        for row in codes:
            grey = np.repeat(row, CODE_BLOCK)[None, :, None]
            writer.write(np.ascontiguousarray(np.broadcast_to(grey, (height, width, 3))))
    finally:
        writer.release()
    return path


def make_toy_multi_animal_bundle(bundle_dir: str | os.PathLike[str], n_animals: int = 3,
                                 bodyparts: Sequence[str] = ("snout", "leftear", "rightear",
                                                             "tailbase"),
                                 scorer: str = TOY_SCORER) -> Path:
    """A multi-animal bottom-up bundle whose graph reads each animal's keypoints from the
    blocks of a :func:`write_coded_video` frame: the network's output is chosen exactly, so
    tests can feed the runtime's tracking any detections through the real analysis path."""
    import onnx
    from onnx import TensorProto, helper

    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    n, k = int(n_animals), len(bodyparts)
    height, width = coded_frame_size(n, k)
    shift = np.tile(np.array([-1.0, -1.0, 0.0], np.float32), n * k)
    scale = np.tile(np.array([1.0, 1.0, 1 / 255], np.float32), n * k)
    inits = [
        helper.make_tensor("blocks", TensorProto.INT64, [3], [0, n * k * 3, CODE_BLOCK]),
        helper.make_tensor("shape", TensorProto.INT64, [4], [0, n, k, 3]),
        helper.make_tensor("shift", TensorProto.FLOAT, [n * k * 3], shift),
        helper.make_tensor("scale", TensorProto.FLOAT, [n * k * 3], scale),
    ]
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["columns"], axes=[1, 3], keepdims=0),  # (B, W)
        helper.make_node("Reshape", ["columns", "blocks"], ["per_block"]),
        helper.make_node("ReduceMean", ["per_block"], ["codes"], axes=[2], keepdims=0),
        helper.make_node("Add", ["codes", "shift"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "scale"], ["values"]),
        helper.make_node("Reshape", ["values", "shape"], ["keypoints"]),
    ]
    graph = helper.make_graph(
        nodes, "toy_coded_poses",
        [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                       ["batch", height, width, 3])],
        [helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, ["batch", n, k, 3])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(bundle_dir / "pose.onnx"))
    manifest = Manifest(
        task="bottom_up", scorer=scorer, bodyparts=list(bodyparts),
        individuals=[f"mouse{i + 1}" for i in range(n)],
        input=InputSpec(height=height, width=width, batch=BatchRange(1, 8, 64)),
        decoder={"type": "toy"},
        graphs={"pose": GraphSpec(
            file="pose.onnx", opset=13,
            inputs=[TensorSpec("images", "uint8", ["batch", height, width, 3])],
            outputs=[TensorSpec("keypoints", "float32", ["batch", n, k, 3])])},
        source={"snapshot": None, "net_type": "toy"},
        multi_animal=True)
    write_manifest(bundle_dir, manifest)
    return bundle_dir
