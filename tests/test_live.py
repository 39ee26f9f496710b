"""dlc_runtime.live.DLCLive: DeepLabCut-live's calls on a bundle, frame by frame.

The live poses are checked against ``analyze_video`` on the same decoded frames (toy, real tiny
bottom-up, multi-animal bottom-up and top-down bundles); cropping, resize and dynamic cropping
against a graph whose keypoint is the brightest pixel (known positions, exact numbers).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from dlc_export import export_bundle
from dlc_runtime import analyze_video
from dlc_runtime.benchmark.synthetic import write_synthetic_video
from dlc_runtime.bundle import BatchRange, GraphSpec, InputSpec, Manifest, TensorSpec, \
    write_manifest
from dlc_runtime.errors import BackendError, DLCRuntimeError, VideoError
from dlc_runtime.live import DLCLive, DLCLiveError, DLCLiveWarning, LatencySummary, Processor
from dlc_runtime.testing import make_test_video, make_toy_bundle, toy_keypoints
from helpers.blocked import run_blocked
from helpers.frames import read_video_frames, textured_frames
from helpers.onnx_graphs import export_graph_onnx
from helpers.shuffles import write_shuffle
from helpers.trained_like import train_heatmap_peaks


pytestmark = pytest.mark.usefixtures("one_thread")


# -- bundles ----------------------------------------------------------------------------------

class Brightest(torch.nn.Module):
    """Keypoint = the first brightest pixel (row-major), likelihood = its brightness / 765."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        total = images.float().sum(-1)  # (B, H, W)
        value, index = total.flatten(1).max(1)
        width = total.shape[2]
        x = (index % width).float()
        y = torch.div(index, width, rounding_mode="floor").float()
        return torch.stack([x, y, value / 765.0], -1)[:, None, None, :]


@pytest.fixture(scope="module")
def spot(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("spot") / "spot.bundle"
    export_graph_onnx(Brightest(), folder / "pose.onnx", np.zeros((1, 40, 50, 3), np.uint8))
    write_manifest(folder, Manifest(
        task="bottom_up", scorer="DLC_Spot_testOct30shuffle1_snapshot_001", bodyparts=["spot"],
        individuals=["animal"], input=InputSpec(height=None, width=None,
                                                batch=BatchRange(1, 1, 8)),
        decoder={"type": "brightest"},
        graphs={"pose": GraphSpec(
            file="pose.onnx", opset=17,
            inputs=[TensorSpec("images", "uint8", ["batch", "height", "width", 3])],
            outputs=[TensorSpec("keypoints", "float32", ["batch", 1, 1, 3])])},
        source={"snapshot": None, "net_type": "brightest"}))
    return folder


def spot_frame(x: int, y: int, width: int = 160, height: int = 120) -> np.ndarray:
    """Black frame with a white 2x2 block whose top-left pixel is (x, y)."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[y:y + 2, x:x + 2] = 255
    return frame


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("toy")
    return (make_toy_bundle(folder / "toy.bundle"),
            make_test_video(folder / "toy.mp4", n_frames=8, width=64, height=48))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A real exported resnet_tiny single-animal bundle (random weights) and a video."""
    folder = tmp_path_factory.mktemp("live-tiny")
    shuffle = write_shuffle(folder / "train")
    bundle = export_bundle(shuffle.config_path, shuffle.snapshot, folder / "tiny.bundle",
                           frames=textured_frames(2, 96, 128), simplify=False,
                           torch_precisions=("fp32",)).bundle_dir
    return bundle, write_synthetic_video(folder / "clip.mp4", n_frames=6, width=128, height=96)


MULTI = {"multianimalproject": True, "multianimalbodyparts": ["a", "b"],
         "individuals": ["m1", "m2"], "uniquebodyparts": []}


def clear_peaks(model: torch.nn.Module) -> None:
    """Heatmaps with one clear peak per keypoint (untrained ones are flat: likelihood ~0)."""
    torch.manual_seed(0)
    train_heatmap_peaks(model, torch.randn(2, 3, 64, 64), steps=20)


@pytest.fixture(scope="module")
def multi_animal(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Multi-animal bundles and a video: bottom-up (PAF) with a unique bodypart, and top-down
    (random detector). The untrained PAF assembles no animal (NaN rows); its unique bodypart
    and the top-down animals give finite keypoints."""
    folder = tmp_path_factory.mktemp("live-ma")
    frames = textured_frames(2, 96, 128)
    video = write_synthetic_video(folder / "clip.mp4", n_frames=4, width=128, height=96)
    bu = write_shuffle(folder / "bu", {**MULTI, "uniquebodyparts": ["u"]})
    td = write_shuffle(folder / "td", MULTI, "top_down_resnet_tiny", prepare=clear_peaks)
    return {
        "bottom_up": (export_bundle(bu.config_path, bu.snapshot, folder / "bu.bundle",
                                    frames=frames, simplify=False).bundle_dir, video),
        "top_down": (export_bundle(td.config_path, td.snapshot, folder / "td.bundle",
                                   frames=frames, simplify=False, max_individuals=2,
                                   # untrained detector scores tie: its parity is moot here
                                   random_detector=True, allow_parity_failure=True
                                   ).bundle_dir, video),
    }


def video_frames(video: Path) -> list[np.ndarray]:
    """The BGR frames OpenCV decodes (what a camera loop hands DLCLive)."""
    return read_video_frames(video)


def analyzed(bundle: Path, video: Path, dest: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """analyze_video's keypoints as (T, N, K, 3) (N = 1 for single-animal bundles), and the
    unique bodyparts' as (T, U, 3) (None without)."""
    result = analyze_video(bundle, video, dest, batch_size=4, progress=False)
    df = pd.read_hdf(result.h5_path)
    if df.columns.nlevels == 3:
        return df.to_numpy(np.float32).reshape(len(df), 1, -1, 3), None
    names = list(df.columns.get_level_values("individuals").unique())
    unique = None
    if "single" in names:
        unique = df.xs("single", level="individuals", axis=1).to_numpy(np.float32)
        unique, names = unique.reshape(len(df), -1, 3), names[:-1]
    animals = df.loc[:, df.columns.get_level_values("individuals").isin(names)]
    return animals.to_numpy(np.float32).reshape(len(df), len(names), -1, 3), unique


def live_poses(bundle: Path, frames: list[np.ndarray], **options
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """(T, N, K, 3) poses of DLCLive(single_animal=False) and (T, U, 3) unique keypoints."""
    with DLCLive(bundle, single_animal=False, **options) as live:
        poses = [live.init_inference(frames[0])]
        unique = [live.unique_pose]
        for frame in frames[1:]:
            poses.append(live.get_pose(frame))
            unique.append(live.unique_pose)
    return np.stack(poses), None if unique[0] is None else np.stack(unique)


# -- same keypoints as analyze_video ------------------------------------------------------------

def test_toy_bundle_matches_analyze_video_and_the_toy_formula(toy, tmp_path):
    bundle, video = toy
    frames = video_frames(video)
    live, _ = live_poses(bundle, frames)
    np.testing.assert_allclose(live, analyzed(bundle, video, tmp_path)[0], atol=1e-4)
    # BGR camera frames are converted: the toy formula on the RGB frames.
    rgb = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames])
    np.testing.assert_allclose(live, toy_keypoints(rgb), rtol=1e-5)


def test_single_animal_pose_is_k_by_3(toy):
    bundle, video = toy
    frame = video_frames(video)[0]
    with DLCLive(bundle) as live:
        pose = live.init_inference(frame)
        assert pose.shape == (2, 3) and pose.dtype == np.float32
        np.testing.assert_array_equal(live.get_pose(frame), pose)
        assert live.pose is not None and live.unique_pose is None


def test_real_tiny_bundle_matches_analyze_video(tiny, tmp_path):
    bundle, video = tiny
    live, _ = live_poses(bundle, video_frames(video))
    expected, _ = analyzed(bundle, video, tmp_path)
    assert live.shape == expected.shape == (6, 1, 3, 3)
    np.testing.assert_allclose(live, expected, atol=1e-3)


def test_every_backend_kind_gives_the_same_poses(tiny):
    """The torch backend (the bundle's torch artifact, on the CPU) and a ready backend handed
    in (left open: the caller owns it) give onnxruntime's poses."""
    from dlc_runtime.backends import make_backend
    from dlc_runtime.bundle import Bundle

    bundle, video = tiny
    frames = video_frames(video)[:3]
    reference, _ = live_poses(bundle, frames)
    on_torch, _ = live_poses(bundle, frames, backend="torch", precision="FP32")
    np.testing.assert_allclose(on_torch, reference, atol=1e-2)
    with make_backend(Bundle.load(bundle), "onnxruntime") as engine:
        handed, _ = live_poses(bundle, frames, backend=engine)
        np.testing.assert_array_equal(handed, reference)
        assert engine.run(cv2.cvtColor(frames[0], cv2.COLOR_BGR2RGB)[None])  # still open
    # DeepLabCut-live's model_type="tensorrt" picks the tensorrt backend on the GPU.
    with DLCLive(bundle, model_type="tensorrt") as live:
        assert (live.backend, live.device) == ("tensorrt", "cuda")
        with pytest.raises(BackendError) as err:
            live.init_inference(frames[0])
    one_line(err, "no TensorRT engine")


@pytest.mark.parametrize("task", ["bottom_up", "top_down"])
def test_multi_animal_bundles_match_analyze_video(multi_animal, task, tmp_path):
    bundle, video = multi_animal[task]
    frames = video_frames(video)
    live, live_unique = live_poses(bundle, frames)
    expected, unique = analyzed(bundle, video, tmp_path)
    assert live.shape == expected.shape == (4, 2, 2, 3)
    np.testing.assert_allclose(live, expected, atol=1e-3)  # NaN where an animal is missing
    if task == "top_down":
        assert np.isfinite(live).all() and (live[..., 2] > 0.05).any() and unique is None
    else:
        assert live_unique.shape == unique.shape == (4, 1, 3) and np.isfinite(unique).all()
        np.testing.assert_allclose(live_unique, unique, atol=1e-3)
    # single_animal (DeepLabCut-live's default): the first individual, (K, 3).
    with DLCLive(bundle) as first:
        np.testing.assert_allclose(first.init_inference(frames[0]), expected[0, 0], atol=1e-3)


def test_top_down_config_bbox_cutoff_drops_every_box(multi_animal):
    bundle, video = multi_animal["top_down"]
    frame = video_frames(video)[0]
    with DLCLive(bundle, single_animal=False, top_down_config={"bbox_cutoff": 2.0,
                                                               "max_detections": 1}) as live:
        pose = live.init_inference(frame)
    assert pose.shape == (1, 2, 3)
    assert np.isnan(pose[..., :2]).all() and (pose[..., 2] == 0).all()
    bottom_up = multi_animal["bottom_up"][0]
    with DLCLive(bottom_up, top_down_config={"bbox_cutoff": 0.5}) as live:
        with pytest.raises(DLCLiveError) as err:
            live.init_inference(frame)
    one_line(err, "needs a top-down bundle", "bottom_up")


# -- cropping, resize, dynamic cropping ---------------------------------------------------------

def test_keypoints_come_back_in_full_frame_pixels(spot):
    frame = spot_frame(70, 50)
    with DLCLive(spot, warmup=0) as live:
        np.testing.assert_array_equal(live.init_inference(frame), [[70, 50, 1]])
    with DLCLive(spot, cropping=[60, 100, 30, 80], warmup=0) as live:
        np.testing.assert_array_equal(live.init_inference(frame), [[70, 50, 1]])
        # The model saw the crop only: a brighter spot outside it is not found.
        brighter = frame.copy()
        brighter[5, 5] = 255
        np.testing.assert_array_equal(live.get_pose(brighter), [[70, 50, 1]])
    for resize in (0.5, 2.0):  # even coordinates: linear resize keeps the block's first pixel
        with DLCLive(spot, resize=resize, warmup=0) as live:
            np.testing.assert_allclose(live.init_inference(frame), [[70, 50, 1]], atol=0.5)
    with DLCLive(spot, cropping=[60, 100, 30, 80], resize=0.5, warmup=0) as live:
        np.testing.assert_allclose(live.init_inference(frame), [[70, 50, 1]], atol=0.5)


def test_odd_resize_maps_back_by_the_exact_size_ratio(tiny):
    """Against the pipeline on the manually resized frame: 128x96 * 0.3 -> 38x28 (floored)."""
    from dlc_runtime.backends import make_backend
    from dlc_runtime.bundle import Bundle
    from dlc_runtime.pipelines import make_pipeline

    bundle, video = tiny
    frame = video_frames(video)[2]
    small = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (38, 28))
    loaded = Bundle.load(bundle)
    with make_backend(loaded, "onnxruntime") as engine:
        direct = make_pipeline(loaded, engine)(small[None]).keypoints[0, 0]
    with DLCLive(bundle, resize=0.3, warmup=0) as live:
        pose = live.init_inference(frame)
    np.testing.assert_allclose(pose[:, 0], direct[:, 0] * 128 / 38, rtol=1e-5)
    np.testing.assert_allclose(pose[:, 1], direct[:, 1] * 96 / 28, rtol=1e-5)
    np.testing.assert_array_equal(pose[:, 2], direct[:, 2])


def test_dynamic_cropping_follows_the_keypoints(spot):
    with DLCLive(spot, dynamic=(True, 0.5, 10), warmup=0) as live:
        np.testing.assert_array_equal(live.init_inference(spot_frame(70, 50)), [[70, 50, 1]])
        assert live.dynamic_cropping == [60, 81, 40, 61]
        # The spot moved within the margin: found in the window, in frame pixels.
        np.testing.assert_array_equal(live.get_pose(spot_frame(76, 44)), [[76, 44, 1]])
        assert live.dynamic_cropping == [66, 87, 34, 55]
        # It jumped out of the window: the window shows black, nothing confident is found,
        # and the next frame is seen whole again.
        lost = live.get_pose(spot_frame(10, 100))
        assert lost[0, 2] == 0 and live.dynamic_cropping is None
        np.testing.assert_array_equal(live.get_pose(spot_frame(10, 100)), [[10, 100, 1]])


def test_dynamic_window_stays_inside_the_static_crop(spot):
    with DLCLive(spot, cropping=[60, 100, 30, 80], dynamic=(True, 0.5, 10), warmup=0) as live:
        live.init_inference(spot_frame(62, 32))
        assert live.dynamic_cropping == [52, 73, 22, 43]  # frame pixels
        brighter = spot_frame(62, 32)
        brighter[25, 55] = 255  # inside the dynamic window, outside the static crop
        np.testing.assert_array_equal(live.get_pose(brighter), [[62, 32, 1]])


# -- processor, colour, latency -----------------------------------------------------------------

class Recorder(Processor):
    """Records what it is given and returns the pose shifted by 1000 in x."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[np.ndarray, dict]] = []

    def process(self, pose, **kwargs):
        self.calls.append((pose.copy(), kwargs))
        shifted = pose.copy()
        shifted[:, 0] += 1000
        return shifted


def test_processor_gets_the_pose_and_changes_what_is_returned(spot):
    recorder = Recorder()
    with DLCLive(spot, processor=recorder, cropping=[60, 100, 30, 80], warmup=0) as live:
        first = live.init_inference(spot_frame(70, 50))
        second = live.get_pose(spot_frame(72, 52), frame_time=1.5)
    np.testing.assert_array_equal(recorder.calls[0][0], [[70, 50, 1]])  # frame pixels
    np.testing.assert_array_equal(recorder.calls[1][0], [[72, 52, 1]])
    assert recorder.calls[0][1] == {} and recorder.calls[1][1] == {"frame_time": 1.5}
    np.testing.assert_array_equal(first, [[1070, 50, 1]])
    np.testing.assert_array_equal(second, [[1072, 52, 1]])
    np.testing.assert_array_equal(live.pose, second)
    assert Processor().process(first) is first and Processor().save("x") == 0


def test_colour_order_and_grey_frames(toy):
    bundle, _ = toy
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with DLCLive(bundle) as bgr, DLCLive(bundle, convert2rgb=False) as rgb:
        np.testing.assert_allclose(bgr.init_inference(frame),
                                   toy_keypoints(frame[None, ..., ::-1].copy())[0, 0], rtol=1e-5)
        np.testing.assert_allclose(rgb.init_inference(frame), toy_keypoints(frame[None])[0, 0],
                                   rtol=1e-5)
        grey = frame[..., 0].copy()
        as_colour = toy_keypoints(np.repeat(grey[None, ..., None], 3, -1))[0, 0]
        np.testing.assert_allclose(bgr.get_pose(grey), as_colour, rtol=1e-5)
        np.testing.assert_allclose(rgb.get_pose(grey[..., None]), as_colour, rtol=1e-5)


def test_latency_figures(toy):
    bundle, video = toy
    frames = video_frames(video)
    with DLCLive(bundle, latency_window=5) as live:
        assert live.latency.calls == 0 and np.isnan(live.latency.p50_ms)
        live.init_inference(frames[0])
        assert live.latency.calls == 0  # loading and warm-up are not counted
        for frame in frames:
            live.get_pose(frame)
        total, pipeline = live.latency, live.pipeline_latency
    assert total.calls == pipeline.calls == 5  # the window
    for summary in (total, pipeline):
        assert 0 < summary.p50_ms <= summary.p99_ms <= summary.max_ms
        assert summary.last_ms > 0 and summary.mean_ms > 0
    assert pipeline.mean_ms < total.mean_ms  # a part of each call
    assert LatencySummary.of([0.001, 0.003]).p50_ms == pytest.approx(2.0)
    live.reset_latency()
    assert live.latency.calls == 0


# -- bad inputs: one line each ------------------------------------------------------------------

def one_line(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message and message, message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_frames_are_one_line(toy):
    bundle, video = toy
    frame = video_frames(video)[0]
    with DLCLive(bundle) as live:
        with pytest.raises(DLCLiveError) as err:
            live.get_pose(frame)
        one_line(err, "init_inference(frame) first")
        live.init_inference(frame)
        cases = [(frame.astype(np.float32) / 255, "float32, not uint8"),
                 (frame[..., :2], "shape (48, 64, 2)"),
                 (np.dstack([frame, frame[..., :1]]), "shape (48, 64, 4)"),
                 (frame[None], "shape (1, 48, 64, 3)"),
                 (frame[:0], "shape (0, 64, 3)"),
                 (frame.tolist(), "not a numpy array"),
                 (None, "needs a frame")]
        for bad, fragment in cases:
            with pytest.raises(DLCLiveError) as err:
                live.get_pose(bad)
            one_line(err, fragment)
        assert live.latency.calls == 0  # a refused frame is not a call


def test_bad_options_are_one_line(toy, tmp_path):
    bundle, video = toy
    frame = video_frames(video)[0]
    with DLCLive(bundle, cropping=[10, 80, 0, 20]) as live:  # x2 beyond the 64-pixel width
        with pytest.raises(DLCLiveError) as err:
            live.init_inference(frame)
        one_line(err, "outside the 64x48 frame", "x2 <= 64")
    bad: list[tuple[dict, type, str]] = [
        ({"cropping": [10, 5, 0, 20]}, DLCLiveError, "0 <= x1 < x2"),
        ({"cropping": [1, 2, 3]}, DLCLiveError, "four integers"),
        ({"resize": 0}, DLCLiveError, "positive number"),
        ({"dynamic": True}, DLCLiveError, "(on, likelihood threshold, margin)"),
        ({"model_type": "lite"}, DLCLiveError, "TensorFlow Lite"),
        ({"model_type": "tensorrt", "backend": "torch"}, DLCLiveError, "disagree"),
        ({"processor": object()}, DLCLiveError, "no process(pose"),
        ({"top_down_dynamic": {"type": "TopDownDynamicCropper"}}, DLCLiveError, "dynamic="),
        ({"top_down_config": {"skip_frames": {}}}, DLCLiveError, "'skip_frames'"),
    ]
    for options, error, fragment in bad:
        with pytest.raises(error) as err:
            DLCLive(bundle, **options)
        one_line(err, fragment)
    for options, error, fragment in [({"backend": "nope"}, BackendError, "unknown backend"),
                                     ({"precision": "INT8"}, BackendError, "int8"),
                                     ({"resize": 0.01}, DLCLiveError, "into nothing")]:
        with DLCLive(bundle, **options) as live, pytest.raises(error) as err:
            live.init_inference(frame)
        one_line(err, fragment)
    with pytest.raises(DLCRuntimeError) as err:
        DLCLive(tmp_path)
    one_line(err, "manifest.yaml is missing")


def test_fixed_size_bundle_refuses_a_crop_of_another_size(tmp_path):
    bundle = make_toy_bundle(tmp_path / "fixed.bundle", height=48, width=64)
    frame = np.zeros((48, 64, 3), np.uint8)
    with DLCLive(bundle) as live:
        live.init_inference(frame)
    with DLCLive(bundle, cropping=[0, 32, 0, 48]) as live, pytest.raises(VideoError) as err:
        live.init_inference(frame)
    one_line(err, "32x48", "64x48")


def test_display_and_tf_config_warn_and_are_ignored(toy):
    bundle, video = toy
    with pytest.warns(DLCLiveWarning, match="label-video"):
        live = DLCLive(bundle, display=True)
    with pytest.warns(DLCLiveWarning, match="tf_config"):
        DLCLive(bundle, tf_config=object()).close()
    with live:
        assert live.init_inference(video_frames(video)[0]).shape == (2, 3)
    assert not live.is_initialized
    assert DLCLive(bundle, model_type="pytorch").parameterization["backend"] == "onnxruntime"


# -- torch-free --------------------------------------------------------------------------------

SCRIPT = """
import json
import numpy as np
from dlc_runtime.live import DLCLive

with DLCLive(sys.argv[1]) as live:
    live.init_inference(np.zeros((48, 64, 3), np.uint8))
    pose = live.get_pose(np.full((48, 64, 3), 90, np.uint8))
assert not leaked(), leaked()
print(json.dumps(pose[0].tolist()))
"""


def test_live_runs_without_torch(toy):
    bundle, _ = toy
    proc = run_blocked(SCRIPT, bundle)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == pytest.approx([90.0, 90.0, 90 / 255])  # the toy formula
