"""DeepLabCut 3's inference API on the runtime (``dlc_runtime.deeplabcut_api``): the names import
and run with torch blocked, and behave as DeepLabCut's on the toy bundle (whose keypoints are a
known function of the pixels) and on an exported top-down bundle (custom bounding boxes)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

import dlc_runtime.deeplabcut_api as pep
from dlc_runtime import analyze_video
from dlc_runtime.errors import BundleError, DLCRuntimeError
from dlc_runtime.testing import TOY_SCORER, make_test_video, make_toy_bundle, toy_keypoints
from helpers.blocked import run_blocked



def _project(root: Path, bundles: dict[str, tuple[str, ...]] | None = None,
             snapshots: tuple[str, ...] = ()) -> Path:
    """A DeepLabCut project (Task "test", date "Oct30") with toy bundles exported under the
    given scorers (each with its own bodyparts, so a test can tell which one ran) and, when
    ``snapshots`` are given, shuffle 1's train folder holding them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(
        {"Task": "test", "date": "Oct30", "bodyparts": ["snout", "tailbase"],
         "TrainingFraction": [0.95], "iteration": 0, "snapshotindex": -1, "batch_size": 4}))
    for scorer, bodyparts in (bundles or {TOY_SCORER: ("snout", "tailbase")}).items():
        make_toy_bundle(root / "exported-models-pytorch" / f"{scorer}.bundle",
                        bodyparts=bodyparts, scorer=scorer)
    if snapshots:
        train = root / "dlc-models-pytorch/iteration-0/testOct30-trainset95shuffle1/train"
        train.mkdir(parents=True)
        (train / "pytorch_config.yaml").write_text(yaml.safe_dump({"net_type": "toy",
                                                                   "method": "bu"}))
        for name in snapshots:
            (train / name).write_bytes(b"")
    return root / "config.yaml"


def _png(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _images(folder: Path, sizes=((48, 64), (48, 64), (30, 40), (48, 64))) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    return [_png(folder / f"img{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            for i, (h, w) in enumerate(sizes)]


# -- torch-free -------------------------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    from pathlib import Path

    import numpy as np

    from dlc_runtime.deeplabcut_api import (DetectorInferenceRunner, PoseInferenceRunner,
                                            VideoIterator, analyze_images, analyze_videos,
                                            video_inference)
    from dlc_runtime.testing import toy_keypoints

    config, videos, images, out = (Path(a) for a in sys.argv[1:5])
    scorer = analyze_videos(config, [videos], videotype="mp4", destfolder=out, progress=False)
    assert len(list(out.glob(f"*{scorer}.h5"))) == 2, sorted(out.iterdir())
    predictions = analyze_images(config, images, progress_bar=False)
    assert len(predictions) == 3 and (images / f"image_predictions_{scorer}.h5").is_file()
    with PoseInferenceRunner(config.parent / "exported-models-pytorch" /
                             f"{scorer}.bundle") as runner:
        poses = video_inference(VideoIterator(next(videos.glob("*.mp4"))), runner,
                                progress=False)
    assert len(poses) == 5 and poses[0]["bodyparts"].shape == (1, 2, 3)
    assert not leaked(), leaked()
    print("OK", scorer)
    """
)


def test_api_names_import_and_run_with_torch_blocked(tmp_path):
    config = _project(tmp_path / "proj")
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        make_test_video(videos / name, n_frames=5)
    make_test_video(videos / "c.avi", n_frames=5, fourcc="MJPG")  # filtered out: not mp4
    images = tmp_path / "images"
    _images(images, sizes=((48, 64),) * 3)
    proc = run_blocked(SCRIPT, config, videos, images, tmp_path / "out", timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"OK {TOY_SCORER}"


# -- analyze_videos -----------------------------------------------------------------------------

def test_analyze_videos_goes_on_past_bad_videos_and_raises_a_summary(tmp_path):
    bundle = make_toy_bundle(tmp_path / "toy.bundle")
    good = [make_test_video(tmp_path / f"g{i}.mp4", n_frames=6) for i in range(2)]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(range(256)) * 50)
    videos = [good[0], corrupt, tmp_path / "missing.mp4", good[1]]
    with pytest.raises(pep.VideosFailedError) as info:
        pep.analyze_videos(bundle, videos, destfolder=tmp_path / "out", progress=False)
    summary = info.value.summary
    assert [o.status for o in summary.outcomes] == ["failed", "analyzed", "failed", "analyzed"]
    assert "corrupt.mp4" in str(info.value) and "missing.mp4" in str(info.value)
    for video in good:
        df = pd.read_hdf(tmp_path / "out" / f"{video.stem}{TOY_SCORER}.h5")
        assert len(df) == 6
    # Rerun on the good ones: already analyzed, skipped; the scorer is returned.
    assert pep.analyze_videos(bundle, good, destfolder=tmp_path / "out",
                              progress=False) == TOY_SCORER


def test_analyze_videos_refuses_what_it_cannot_do(tmp_path):
    bundle = make_toy_bundle(tmp_path / "toy.bundle")
    video = make_test_video(tmp_path / "v.mp4", n_frames=3)
    with pytest.raises(DLCRuntimeError, match=r"cropping=\[0, 10, 0, 10\]\) is not supported"):
        pep.analyze_videos(bundle, video, cropping=[0, 10, 0, 10], progress=False)
    with pytest.raises(TypeError, match="no_such_argument"):
        pep.analyze_videos(bundle, video, no_such_argument=1)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        pep.analyze_videos(bundle, video, batch_size=0)
    # DeepLabCut's defaults and arguments that change nothing here are accepted.
    assert pep.analyze_videos(bundle, video, dynamic=(False, 0.5, 10), auto_track=True,
                              robust_nframes=True, destfolder=tmp_path / "o",
                              progress=False) == TOY_SCORER
    assert not list(tmp_path.glob("*.h5"))  # refused calls wrote nothing


# -- a project's bundle -------------------------------------------------------------------------

def test_project_config_finds_the_bundle_for_its_snapshot(tmp_path):
    names = {"DLC_Toy_testOct30shuffle1_snapshot_1": ("early_a", "early_b"),
             "DLC_Toy_testOct30shuffle1_snapshot_best-2": ("best_a", "best_b"),
             "DLC_Toy_testOct30shuffle2_snapshot_5": ("other_a", "other_b")}
    config = _project(tmp_path / "p", names, snapshots=("snapshot-001.pt", "snapshot-best-002.pt"))
    # snapshotindex -1 (the project's): the best snapshot; snapshot_index=0: the first.
    assert pep.load_bundle(config).bodyparts == ["best_a", "best_b"]
    assert pep.load_bundle(config, snapshot_index=0).bodyparts == ["early_a", "early_b"]
    # No train folder here (an analysis machine): shuffle 2's only bundle is the one.
    assert pep.load_bundle(config, shuffle=2).bodyparts == ["other_a", "other_b"]
    with pytest.raises(BundleError, match="no exported bundle for shuffle 3 .* dlc export "):
        pep.load_bundle(config, shuffle=3)

    # Without the train folder, two bundles of one shuffle: the caller has to choose.
    bare = _project(tmp_path / "bare", names)
    with pytest.raises(BundleError, match="2 bundles for shuffle 1 .* pass the bundle folder"):
        pep.load_bundle(bare)
    # A snapshot asked for that has no bundle: refused, naming what to export.
    (tmp_path / "p/exported-models-pytorch/DLC_Toy_testOct30shuffle1_snapshot_1.bundle"
     / "manifest.yaml").unlink()
    with pytest.raises(BundleError, match="no bundle for DLC_Toy_testOct30shuffle1_snapshot_1 "
                                          ".*--snapshot-index 0"):
        pep.load_bundle(config, snapshot_index=0)
    with pytest.raises(BundleError, match="not a DeepLabCut project config"):
        (tmp_path / "other.yaml").write_text("a: 1\n")
        pep.load_bundle(tmp_path / "other.yaml")


# -- images, runners, video_inference -----------------------------------------------------------

def test_analyze_images_writes_deeplabcuts_table(tmp_path):
    bundle = make_toy_bundle(tmp_path / "toy.bundle")
    paths = _images(tmp_path / "frames")
    (tmp_path / "frames" / "notes.txt").write_text("not an image")
    predictions = pep.analyze_images(bundle, tmp_path / "frames", save_as_csv=True,
                                     progress_bar=False)
    assert list(predictions) == [str(p) for p in paths]
    for path in paths:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        np.testing.assert_allclose(predictions[str(path)]["bodyparts"],
                                   toy_keypoints(rgb[None])[0], rtol=1e-5)
    h5 = tmp_path / "frames" / f"image_predictions_{TOY_SCORER}.h5"
    df = pd.read_hdf(h5, "predictions")
    assert df.columns.names == ["scorer", "individuals", "bodyparts", "coords"]
    assert list(df.index) == [str(p) for p in paths]
    np.testing.assert_allclose(df.loc[str(paths[2])].to_numpy(),
                               predictions[str(paths[2])]["bodyparts"].reshape(-1), rtol=1e-6)
    assert h5.with_suffix(".csv").is_file()
    # A new output_dir is created (it was checked writable before the inference).
    pep.analyze_images(bundle, paths[:1], output_dir=tmp_path / "new" / "out",
                       progress_bar=False)
    assert (tmp_path / "new" / "out" / h5.name).is_file()
    assert pep.analyze_images(bundle, tmp_path / "frames", frame_type="jpg") == {}
    with pytest.raises(DLCRuntimeError, match="max_individuals=3"):
        pep.analyze_images(bundle, paths, max_individuals=3)


def test_runner_batches_images_of_several_sizes_in_order(tmp_path):
    bundle = make_toy_bundle(tmp_path / "toy.bundle")
    paths = _images(tmp_path / "frames")
    arrays = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
    with pep.PoseInferenceRunner(bundle, batch_size=2) as runner:
        from_paths = runner.inference(paths)
        from_arrays = runner.inference([(a, {}) for a in arrays])
    assert len(from_paths) == len(from_arrays) == 4
    for got, again, rgb in zip(from_paths, from_arrays, arrays):
        expected = toy_keypoints(rgb[None])[0]
        np.testing.assert_allclose(got["bodyparts"], expected, rtol=1e-5)
        np.testing.assert_array_equal(got["bodyparts"], again["bodyparts"])
    with pytest.raises(BundleError, match="DetectorInferenceRunner needs a top-down bundle"):
        pep.DetectorInferenceRunner(bundle)


def test_video_inference_gives_analyze_videos_keypoints(tmp_path):
    bundle = make_toy_bundle(tmp_path / "toy.bundle")
    video = make_test_video(tmp_path / "v.mp4", n_frames=11)
    with pep.PoseInferenceRunner(bundle, batch_size=4) as runner:
        poses = pep.video_inference(video, runner, progress=False)
    h5 = analyze_video(bundle, video, tmp_path / "out", progress=False).h5_path
    values = pd.read_hdf(h5).to_numpy()
    assert len(poses) == len(values) == 11
    np.testing.assert_array_equal(np.stack([p["bodyparts"].reshape(-1) for p in poses]),
                                  values.astype(np.float32))


# -- top-down: the bundle's detector, or custom bounding boxes ----------------------------------

@pytest.fixture(scope="module")
def td_bundle(tmp_path_factory):
    """A top-down bundle of random weights (parity is not under test here)."""
    import torch

    from dlc_export import export_bundle
    from dlc_export.tasks.detector import build_detector
    from dlc_train.config import make_pytorch_pose_config, write_config
    from dlc_train.models.loading import build_model_from_config

    root = tmp_path_factory.mktemp("td")
    train = root / "train"
    train.mkdir()
    project = {"multianimalbodyparts": ["a", "b", "c"], "multianimalproject": True,
               "individuals": ["m1", "m2"], "uniquebodyparts": []}
    cfg = make_pytorch_pose_config(project, train / "pytorch_config.yaml",
                                   "top_down_resnet_tiny")
    cfg["data"]["inference"]["top_down_crop"] = {"width": 32, "height": 32}
    write_config(train / "pytorch_config.yaml", cfg)
    torch.manual_seed(0)
    torch.save({"metadata": {}, "model": build_model_from_config(cfg).state_dict()},
               train / "snapshot-005.pt")
    torch.save({"metadata": {}, "model": build_detector(cfg).state_dict()},
               train / "snapshot-detector-005.pt")
    frames = np.random.default_rng(0).integers(0, 256, (2, 96, 128, 3), dtype=np.uint8)
    result = export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                           root / "td.bundle", frames=frames, allow_parity_failure=True,
                           box_score_threshold=0.0)
    return result.bundle_dir


def test_custom_bounding_boxes_run_the_pose_graph_on_them(td_bundle, tmp_path):
    from dlc_runtime.backends import make_backend
    from dlc_runtime.bundle import Bundle

    bundle = Bundle.load(td_bundle)
    frames = np.random.default_rng(1).integers(0, 256, (3, 96, 128, 3), dtype=np.uint8)
    boxes = [np.array([[10, 20, 40, 30]], np.float32),                     # x, y, w, h
             np.array([[5, 5, 50, 60], [60, 30, 30, 40]], np.float32),
             np.zeros((0, 4), np.float32)]
    with pep.PoseInferenceRunner(bundle) as runner:
        got = runner.inference([(f, {"bboxes": b}) for f, b in zip(frames, boxes)])
    # The pose graph itself on the same boxes as x1, y1, x2, y2 in its two slots.
    slots = np.tile(np.array([0, 0, 1, 1], np.float32), (3, 2, 1))
    slots[0, 0] = (10, 20, 50, 50)
    slots[1] = [(5, 5, 55, 65), (60, 30, 90, 70)]
    with make_backend(bundle, "onnxruntime", "cpu", graph="pose") as pose:
        direct = pose.run(frames, boxes=slots)["keypoints"]
    np.testing.assert_allclose(got[0]["bodyparts"][0], direct[0, 0], atol=1e-4)
    np.testing.assert_allclose(got[1]["bodyparts"], direct[1], atol=1e-4)
    # Slots without a box: missing individuals (NaN, likelihood 0); boxes padded with -1.
    empty = got[0]["bodyparts"][1]
    assert np.isnan(empty[:, :2]).all() and (empty[:, 2] == 0).all()
    assert np.isnan(got[2]["bodyparts"][..., :2]).all()
    np.testing.assert_array_equal(got[1]["bboxes"], boxes[1])
    np.testing.assert_array_equal(got[0]["bboxes"][1], [-1, -1, -1, -1])
    np.testing.assert_array_equal(got[1]["bbox_scores"], [1, 1])


def test_detector_runner_then_pose_runner_equals_analyze_video(td_bundle, tmp_path):
    video = make_test_video(tmp_path / "v.mp4", n_frames=6, width=128, height=96)
    with pep.DetectorInferenceRunner(td_bundle, batch_size=4) as detector, \
            pep.PoseInferenceRunner(td_bundle, batch_size=4) as runner:
        two_runners = pep.video_inference(video, runner, detector, progress=False)
        bundle_alone = pep.video_inference(video, runner, progress=False)
        # The detector's boxes, edited (shifted 4 px) and handed back as custom boxes.
        with pep.VideoIterator(video, batch_size=6) as frames:
            found = detector.inference([frame for _, batch in frames for frame in batch])
        shifted = [{"bboxes": f["bboxes"] + np.array([4, 0, 0, 0], np.float32)}
                   for f in found]
        custom = pep.VideoIterator(video, batch_size=4)
        custom.set_context(shifted)
        moved = pep.video_inference(custom, runner, progress=False)
    values = pd.read_hdf(analyze_video(td_bundle, video, tmp_path / "out",
                                       progress=False).h5_path).to_numpy()
    for poses in (two_runners, bundle_alone):
        np.testing.assert_allclose(np.stack([p["bodyparts"].reshape(-1) for p in poses]),
                                   values, atol=1e-4, equal_nan=True)
    assert all(len(f["bboxes"]) <= 2 and np.all(np.diff(f["bbox_scores"]) <= 0) for f in found)
    used = [p["bboxes"][:len(f["bboxes"])] for p, f in zip(moved, found)]
    for boxes, f in zip(used, found):
        np.testing.assert_allclose(boxes[:, 0], f["bboxes"][:, 0] + 4, atol=1e-4)
