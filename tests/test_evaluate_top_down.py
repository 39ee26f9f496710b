"""`dlc evaluate` on top-down shuffles: ground-truth boxes or detector snapshots, DeepLabCut 3's
scorer (``..._detector_<uid>_snapshot_<uid>``) and ``Detector epochs (TD only)`` column, the
crop -> model -> image-pixel round trip on images with known points, the detector's boxes
back in image pixels, and the exported bundle's keypoints on the same boxes."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dlc_train.apis import evaluate_network
from helpers.cli import invoke
from dlc_train.synthetic import SyntheticSpec, generate_project

pytestmark = pytest.mark.usefixtures("one_thread")

CROP = [f"--set=data.{s}.top_down_crop.{k}=64" for s in ("train", "inference")
        for k in ("width", "height")]
TRAIN = ["--device", "cpu", "--batch-size", "4", "--no-progress", "--epochs", "1",
         "--detector-epochs", "0", "--set=runner.eval_interval=1",
         "--set=runner.snapshots.save_epochs=1", "--set=data.train.affine=null", *CROP]
SHUFFLE = "syntheticJan1-trainset95shuffle1"


def _folders(config: Path) -> tuple[Path, Path]:
    root = config.parent
    return (root / "dlc-models-pytorch" / "iteration-0" / SHUFFLE / "train",
            root / "evaluation-results-pytorch" / "iteration-0" / SHUFFLE)


@pytest.fixture(scope="module")
def top_down(tmp_path_factory) -> Path:
    """Two mice per 160x120 frame (4 labeled frames), top_down_resnet_tiny pose model trained
    one epoch on 64x64 crops, no detector trained yet; its config.yaml."""
    spec = SyntheticSpec(seed=2, width=160, height=120, num_labeled_frames=4,
                         num_video_frames=1, num_animals=2, body_length=0.2,
                         net_type="top_down_resnet_tiny")
    config = generate_project(tmp_path_factory.mktemp("td"), spec).config_path
    torch.manual_seed(0)
    res = invoke(["train", config, *TRAIN])
    assert res.exit_code == 0, res.output
    return config


def test_ground_truth_boxes_then_a_detector_snapshot(top_down):
    train, results = _folders(top_down)
    # No detector snapshot: ground-truth boxes, said in one line (as DeepLabCut).
    res = invoke(["evaluate", top_down])
    assert res.exit_code == 0, res.output
    assert "without a detector snapshot (snapshot-detector-*.pt)" in res.output
    assert "evaluating with ground-truth boxes" in res.output
    scorer = "DLC_ResnetTiny_syntheticJan1shuffle1_snapshot_best-1"
    table = pd.read_csv(results / f"{scorer}-results.csv")
    assert table["Detector epochs (TD only)"].tolist() == [-1]
    assert table["Training epochs"].tolist() == [1]
    df = pd.read_hdf(results / f"{scorer}.h5")
    assert list(df.columns.get_level_values("individuals").unique()) == ["mouse1", "mouse2"]
    # Ground-truth boxes: every labeled animal of every image gets a pose.
    assert not df.xs("likelihood", level="coords", axis=1).isna().any().any()

    import dlc_train.models  # noqa: F401  (registers the detectors)
    from dlc_train.config.detectors import detector_config
    from dlc_train.models.detectors import DETECTORS

    cfg = yaml.safe_load((train / "pytorch_config.yaml").read_text())
    torch.manual_seed(0)
    detector = DETECTORS.build(dict(cfg["detector"]["model"], pretrained=False))
    assert type(detector) is type(DETECTORS.build(detector_config("ssdlite")["model"]))
    torch.save({"metadata": {"epoch": 3}, "model": detector.state_dict()},
               train / "snapshot-detector-003.pt")
    result = evaluate_network(top_down, show_errors=False)[0]
    assert result.scorer == "DLC_ResnetTiny_syntheticJan1shuffle1_detector_3_snapshot_best-1"
    assert result.detector == train / "snapshot-detector-003.pt"
    assert result.scores["Detector epochs (TD only)"] == 3
    written = pd.read_csv(result.files["results"])
    assert written["Detector epochs (TD only)"].tolist() == [3]
    # The combined table keeps both rows, told apart by the detector's epochs.
    combined = pd.read_csv(next(results.parent.glob("CombinedEvaluation-results*.csv")))
    assert sorted(combined["Detector epochs (TD only)"].tolist()) == [-1, 3]
    # --gt-boxes still evaluates with the labels' boxes (the scorer without a detector).
    before = (results / f"{scorer}-results.csv").read_bytes()
    res = invoke(["evaluate", top_down, "--gt-boxes"])
    assert res.exit_code == 0 and f"results in {results / scorer}-results.csv" in res.output
    assert (results / f"{scorer}-results.csv").read_bytes() == before  # same numbers again


def test_crop_and_map_back_on_known_points(top_down, tmp_path):
    """Images with one bright dot per animal; a 'model' that answers the brightest pixel of
    each crop: the predictions land on the dots, in image pixels, one animal per row."""
    from dlc_train.evaluation.top_down import GroundTruthBoxes, TopDownPredictor

    train, _ = _folders(top_down)
    cfg = yaml.safe_load((train / "pytorch_config.yaml").read_text())
    dots = {"a.png": [(30.0, 40.0), (121.0, 85.0)], "b.png": [(140.0, 12.0)]}
    labels = {}
    for name, points in dots.items():
        image = np.zeros((120, 160, 3), np.uint8)
        kps = np.zeros((2, 5, 3))
        for n, (x, y) in enumerate(points):
            image[int(y), int(x)] = 255
            # The box spans the dot and two labeled points 10 px away (a 20x20 box).
            kps[n, :3] = [(x, y, 2), (x - 10, y - 10, 2), (x + 10, y + 10, 2)]
        cv2.imwrite(str(tmp_path / name), image)
        labels[str(tmp_path / name)] = kps

    predictor = TopDownPredictor(cfg, train / "snapshot-001.pt",
                                 GroundTruthBoxes(labels, margin=5), max_individuals=2,
                                 num_bodyparts=5)

    def brightest(crops, conditions=None):
        out = []
        for crop in crops:
            y, x = np.unravel_index(crop.sum(axis=0).argmax(), crop.shape[1:])
            out.append(np.tile([x, y, 0.9], (5, 1)))
        return np.asarray(out, np.float32)

    predictor._poses = brightest
    found = predictor(list(labels))
    for name, points in dots.items():
        pred = found[str(tmp_path / name)]
        assert pred["bodyparts"].shape == (2, 5, 3)
        # 30x30 boxes (20 + 2 x 5 margin) in 64-pixel crops: under half a pixel per crop pixel.
        assert pred["bodyparts"][:len(points), 0, :2] == pytest.approx(np.array(points),
                                                                       abs=0.6)
        assert np.isnan(pred["bodyparts"][len(points):]).all()
        # The labels' boxes, clipped to the image (b.png's dot is 12 px from the top).
        assert pred["bboxes"][:len(points)] == pytest.approx(np.array(
            [[x - 15, max(y - 15, 0), 30, min(y + 15, 120) - max(y - 15, 0)]
             for x, y in points]))


def test_detector_boxes_come_back_to_the_image(top_down, tmp_path):
    """The detector sees the image through its inference transforms (here a resize to half
    size): its boxes are mapped back to the image's pixels, best first, at most one per
    individual."""
    from dlc_train.evaluation.top_down import DetectorBoxes

    train, _ = _folders(top_down)
    detector = next(train.glob("snapshot-detector-*.pt"), None) or _save_detector(train)
    cfg = yaml.safe_load((train / "pytorch_config.yaml").read_text())
    cfg["detector"]["data"] = {"inference": {"resize": {"width": 80, "height": 60,
                                                        "keep_ratio": False},
                                             "normalize_images": True}}
    boxes = DetectorBoxes(cfg, detector, max_individuals=2)
    seen = []

    class Fixed(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return {}, [{"boxes": torch.tensor([[10.0, 5.0, 30.0, 25.0], [40.0, 30.0, 60.0, 50.0],
                                                [0.0, 0.0, 4.0, 4.0]]),
                         "scores": torch.tensor([0.5, 0.9, 0.1])}]

    boxes.model = Fixed()
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((120, 160, 3), np.uint8))
    xywh, scores = boxes(str(image))
    assert seen == [(1, 3, 60, 80)]
    assert scores == pytest.approx([0.9, 0.5])
    # Half size in, so twice the size out (x * s, as the resize moves keypoints).
    assert xywh == pytest.approx(np.array([[80, 60, 40, 40], [20, 10, 40, 40]]), abs=1e-4)


def _save_detector(train: Path) -> Path:
    import dlc_train.models  # noqa: F401
    from dlc_train.models.detectors import DETECTORS

    cfg = yaml.safe_load((train / "pytorch_config.yaml").read_text())
    path = train / "snapshot-detector-003.pt"
    detector = DETECTORS.build(dict(cfg["detector"]["model"], pretrained=False))
    torch.save({"metadata": {"epoch": 3}, "model": detector.state_dict()}, path)
    return path


@pytest.mark.slow
def test_evaluation_equals_the_exported_bundle_on_the_same_boxes(top_down, tmp_path):
    """What `dlc evaluate --gt-boxes` predicts is what the exported bundle's pose graph
    (crop inside the graph) predicts on the same images given the same boxes."""
    from dlc_export.pipeline import export_bundle
    from dlc_runtime.bundle import Bundle
    from dlc_runtime.deeplabcut_api import PoseInferenceRunner
    from dlc_train.data.dlcloader import DLCLoader
    from dlc_train.evaluation.top_down import GroundTruthBoxes

    train, _ = _folders(top_down)
    result = evaluate_network(top_down, snapshotindex=0, ground_truth_boxes=True,
                              show_errors=False)[0]
    assert result.snapshot == train / "snapshot-001.pt"
    df = pd.read_hdf(result.files["predictions"])
    paths = [str(top_down.parent / Path(*index)) for index in df.index]
    evaluated = df.to_numpy().reshape(len(df), 2, 5, 3)

    exported = export_bundle(train / "pytorch_config.yaml", train / "snapshot-001.pt",
                             tmp_path / "td.bundle", allow_parity_failure=True)
    cfg = yaml.safe_load((train / "pytorch_config.yaml").read_text())
    loader = DLCLoader(top_down)
    boxes = GroundTruthBoxes(dict(loader.train_samples() + loader.test_samples()),
                             cfg["data"]["bbox_margin"])
    items = []
    for path in paths:
        xywh, scores = boxes(path)
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        items.append((rgb, {"bboxes": xywh, "bbox_scores": scores}))
    with PoseInferenceRunner(Bundle.load(exported.bundle_dir), batch_size=2) as runner:
        found = runner.inference(items)
    assert len(found) == len(paths) == 4
    for got, want in zip(found, evaluated):
        np.testing.assert_allclose(got["bodyparts"][..., :2], want[..., :2], atol=0.01)
        np.testing.assert_allclose(got["bodyparts"][..., 2], want[..., 2], atol=1e-3)
