"""`dlc evaluate` / evaluate_network end to end on small synthetic projects trained here: the
files, folders and columns DeepLabCut 3 writes, numbers that agree with the training runner's
own evaluation and with a recomputation from the written .h5, multi-animal mAP and identity
accuracy, labeled images, and bad input (one line, nothing written)."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dlc_train.apis import evaluate_network, train_network
from dlc_train.data.project import load_labels, load_project
from dlc_train.evaluation import compute_metrics
from dlc_train.synthetic import SyntheticSpec, generate_project
from helpers.cli import invoke, one_error_line
from helpers.deeplabcut_shuffle import write_deeplabcut_shuffle

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"data.train.crop_sampling": None, "data.train.affine": None, "runner.eval_interval": 1,
        "runner.snapshots.save_epochs": 1}
EVAL = "evaluation-results-pytorch/iteration-0/syntheticJan1-trainset95shuffle1"
DLC_COLUMNS = ["%Training dataset", "Shuffle number", "Training epochs",
               "Detector epochs (TD only)", "pcutoff", "train rmse", "train rmse_pcutoff",
               "train mAP", "train mAR", "test rmse", "test rmse_pcutoff", "test mAP",
               "test mAR"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """A single-animal project (8 frames of 64x48: 7 train, 1 test), resnet_tiny trained for 2
    epochs (snapshots 001, 002 and a best one); its config.yaml."""
    spec = SyntheticSpec(seed=0, width=64, height=48, num_labeled_frames=8, num_video_frames=1,
                         body_length=0.3, net_type="resnet_tiny")
    config = generate_project(tmp_path_factory.mktemp("single"), spec).config_path
    torch.manual_seed(0)
    train_network(config, epochs=2, batch_size=4, device="cpu", progress=False,
                  pytorch_config_overrides=FAST)
    return config


def _labels(config: Path, image_paths: list[str]) -> dict[str, np.ndarray]:
    labels = load_labels(load_project(config))
    row = {p: i for i, p in enumerate(labels.image_paths)}
    return {p: labels.keypoints[row[p]] for p in image_paths}


def _h5_poses(h5: Path, individuals: int) -> dict[str, np.ndarray]:
    df = pd.read_hdf(h5, key="df_with_missing")
    assert list(df.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    values = df.to_numpy().reshape(len(df), individuals, -1, 3)
    return {"/".join(index): values[i] for i, index in enumerate(df.index)}


def test_single_animal_files_and_numbers(single, capsys):
    results = evaluate_network(single, shuffles=[1], per_keypoint_evaluation=True,
                               pck_thresholds=[4, 16])
    assert len(results) == 1
    result = results[0]
    # snapshotindex -1 (the project's) is the best snapshot: DeepLabCut lists it last.
    assert result.scorer == "DLC_ResnetTiny_syntheticJan1shuffle1_snapshot_best-" \
        f"{result.scores['Training epochs']}"
    folder = single.parent / EVAL
    assert result.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{result.scorer}{suffix}" for suffix in (".h5", "-results.csv",
                                                  "-keypoint-results.csv", "-pck-results.csv"))

    scores = pd.read_csv(folder / f"{result.scorer}-results.csv")
    assert list(scores.columns) == DLC_COLUMNS
    row = scores.iloc[0]
    assert (row["%Training dataset"], row["Shuffle number"], row["pcutoff"]) == (0.95, 1, 0.4)
    assert row["Detector epochs (TD only)"] == -1
    for split in ("train", "test"):
        for name in ("rmse", "mAP", "mAR"):
            assert row[f"{split} {name}"] == round(result.metrics[split][name], 2)
    assert "Evaluation results for" in capsys.readouterr().out

    # The training runner evaluated the same test image with the same metrics at the end of
    # the same epoch: the numbers agree.
    snap = torch.load(result.snapshot, weights_only=True)
    assert snap["metadata"]["metrics"]["metrics/test.rmse"] == pytest.approx(
        result.metrics["test"]["rmse"], rel=1e-5)

    # The .h5 holds the predictions the metrics were computed from, one row per labeled image.
    poses = _h5_poses(folder / f"{result.scorer}.h5", 1)
    assert len(poses) == 8
    loader_split = yaml.safe_load(next((single.parent / "training-datasets").rglob(
        "Documentation_data-*.yaml")).read_text())
    for split, key in (("train", "train_images"), ("test", "test_images")):
        images = loader_split[key]
        again = compute_metrics(_labels(single, images), {p: poses[p] for p in images},
                                single_animal=True, pcutoff=0.4, per_keypoint_rmse=True,
                                pck_thresholds=[4, 16])
        assert again == pytest.approx(result.metrics[split], nan_ok=True)

    per_bodypart = pd.read_csv(folder / f"{result.scorer}-keypoint-results.csv", index_col=0)
    assert list(per_bodypart.index) == ["Train error (px)", "Test error (px)"]
    assert list(per_bodypart.columns) == ["snout", "leftear", "rightear", "tailbase", "tailtip"]
    assert per_bodypart.loc["Test error (px)", "snout"] == pytest.approx(
        result.metrics["test"]["rmse_keypoint_0"])
    pck = pd.read_csv(folder / f"{result.scorer}-pck-results.csv", index_col=0)
    assert pck.loc["Train", "PCK@16px"] == pytest.approx(result.metrics["train"]["PCK@16px"])
    assert 0 <= pck.loc["Train", "PCK@4px"] <= pck.loc["Train", "PCK@16px"] <= 1


def test_all_snapshots_fill_the_combined_results(single):
    results = evaluate_network(single, snapshotindex="all", show_errors=False, pcutoff=0.0)
    assert [Path(r.snapshot).name for r in results] == ["snapshot-001.pt", "snapshot-002.pt",
                                                          results[-1].snapshot.name]
    combined = pd.read_csv(single.parent / "evaluation-results-pytorch" / "iteration-0"
                           / "CombinedEvaluation-results.csv")
    assert list(combined.columns) == DLC_COLUMNS
    mine = combined[combined["pcutoff"] == 0.0]
    assert sorted(mine["Training epochs"]) == [1, 2]  # the best one shares its epoch's row
    # pcutoff 0 keeps every keypoint: rmse_pcutoff is the rmse.
    assert (mine["test rmse"] == mine["test rmse_pcutoff"]).all()
    assert len(combined) > len(mine)  # the earlier pcutoff-0.4 row is kept


def test_labeled_images(single):
    pytest.importorskip("matplotlib")
    import cv2

    result = evaluate_network(single, plotting=True, show_errors=False,
                              snapshots_to_evaluate=["snapshot-001"])[0]
    folder = result.files["plots"]
    assert folder == result.folder / f"LabeledImages_{result.scorer}"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 8 and sum(n.startswith("Test-synthmouse-img") for n in names) == 1
    assert all(n.startswith(("Training-synthmouse-img", "Test-synthmouse-img"))
               and n.endswith(".png") for n in names)
    image = cv2.imread(str(folder / names[0]))
    assert image.shape == (48, 64, 3)  # the frame's size
    frame = cv2.imread(str(single.parent / "labeled-data" / "synthmouse"
                           / names[0].split("-")[-1]))
    assert np.abs(image.astype(int) - frame.astype(int)).max() > 50  # markers were drawn


def test_cli_evaluate_and_bad_input(single, tmp_path):
    res = invoke(["evaluate", single, "--shuffle", "1", "--snapshot-index", "0"])
    assert res.exit_code == 0, res.output
    assert "DLC_ResnetTiny_syntheticJan1shuffle1_snapshot_1-results.csv" in res.output

    project = single.parent
    before = _tree(project)
    line = one_error_line(invoke(["evaluate", single, "--shuffle", "7"]),
                          "shuffle 7 (trainset 95%) has no trained model")
    assert "train it first" in line
    one_error_line(invoke(["evaluate", single, "--snapshot-index", "9"]),
                   "snapshot index 9 is out of range", "holds 3 snapshot(s)")
    one_error_line(invoke(["evaluate", single, "--snapshot-index", "last"]),
                   "snapshot index 'last'")
    one_error_line(invoke(["evaluate", single, "--comparison-bodypart", "tail"]),
                   "['tail'] are not bodyparts of the project")
    one_error_line(invoke(["evaluate", tmp_path / "nowhere.yaml"]), "project config not found")
    assert _tree(project) == before  # nothing written, no split made for shuffle 7

    # A trained shuffle whose snapshots are gone.
    train = project / "dlc-models-pytorch" / "iteration-0" / "syntheticJan1-trainset95shuffle1"
    copy = project / "dlc-models-pytorch" / "iteration-0" / "syntheticJan1-trainset95shuffle3"
    shutil.copytree(train / "train", copy / "train", ignore=shutil.ignore_patterns("*.pt"))
    split = next((project / "training-datasets").rglob("*95shuffle1.yaml"))
    shutil.copy(split, split.with_name(split.name.replace("shuffle1", "shuffle3")))
    one_error_line(invoke(["evaluate", single, "--shuffle", "3"]),
                   "no snapshot-*.pt in", "train this shuffle first")

    # A shuffle DeepLabCut split (its pickle, no YAML split): evaluated on DeepLabCut's test
    # images, read by row of its merged labels; a damaged pickle is one line, nothing written.
    shutil.copytree(train / "train", copy.with_name(copy.name[:-1] + "5") / "train")
    pickle_path, rows = write_deeplabcut_shuffle(single, 5, train_rows=[0, 1, 2, 3, 5, 6],
                                                 test_rows=[4, 7])
    result = evaluate_network(single, shuffles=[5], snapshotindex=0, show_errors=False)[0]
    assert not any(split.parent.glob("*shuffle5.yaml"))
    df = pd.read_hdf(result.files["predictions"], key="df_with_missing")
    test_images = [rows[4], rows[7]]
    poses = {p: df.loc[tuple(p.split("/"))].to_numpy().reshape(1, -1, 3) for p in test_images}
    again = compute_metrics(_labels(single, test_images), poses, single_animal=True,
                            pcutoff=result.scores["pcutoff"])
    assert again == pytest.approx(result.metrics["test"], nan_ok=True)
    pickle_path.write_bytes(b"")
    before = _tree(project)
    one_error_line(invoke(["evaluate", single, "--shuffle", "5"]),
                   "cannot read DeepLabCut's split", "shuffle5.pickle")
    assert _tree(project) == before


@pytest.mark.parametrize("inference", [
    {"resize": {"height": 100, "width": 90, "keep_ratio": True}, "normalize_images": True},
    {"longest_max_size": 200, "auto_padding": {"pad_height_divisor": 32,
                                                "pad_width_divisor": 32},
     "normalize_images": True},
])
def test_keypoints_come_back_to_the_image_pixels(single, inference):
    """Predictions are read in the network input's pixels; the probes' map takes labeled
    points carried through the same inference transforms back to where they were."""
    from dlc_train.data.dataset import PoseDataset
    from dlc_train.data.transforms import build_transforms
    from dlc_train.evaluation.predict import input_to_image, probe_dataset

    transform = build_transforms(inference)
    labels = load_labels(load_project(single))
    path = str(single.parent / labels.image_paths[0])
    item = probe_dataset([path], transform)[0]
    assert tuple(item["image"].shape[1:]) != (48, 64)  # the input is not the frame
    moved = PoseDataset([(path, labels.keypoints[0])], transform, list(range(5)))[0]
    back = input_to_image(item)
    xy = moved["annotations"]["keypoints"][0, :, :2].numpy().astype(np.float64)
    assert xy @ back[:, :2].T + back[:, 2] == pytest.approx(labels.keypoints[0][0, :, :2],
                                                            abs=1e-3)


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> Path:
    """Two animals per frame, identity head on (8 frames of 128x96), resnet_tiny with part
    affinity fields, 2 epochs; its config.yaml."""
    spec = SyntheticSpec(seed=3, width=128, height=96, num_labeled_frames=8, num_video_frames=1,
                         num_animals=2, body_length=0.2, net_type="resnet_tiny")
    config = generate_project(tmp_path_factory.mktemp("multi"), spec).config_path
    cfg = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump(dict(cfg, identity=True), sort_keys=False))
    torch.manual_seed(0)
    train_network(config, epochs=2, batch_size=4, device="cpu", progress=False,
                  pytorch_config_overrides=FAST)
    return config


def test_multi_animal_map_and_identity(multi):
    result = evaluate_network(multi, show_errors=False)[0]
    columns = list(pd.read_csv(result.files["results"]).columns)
    identity = [f"{split} id_head_{bp}_accuracy" for split in ("train", "test")
                for bp in ("snout", "leftear", "rightear", "tailbase", "tailtip")]
    assert columns == DLC_COLUMNS[:9] + identity[:5] + DLC_COLUMNS[9:] + identity[5:]
    for split in ("train", "test"):
        m = result.metrics[split]
        assert 0 <= m["mAP"] <= 100 and 0 <= m["mAR"] <= 100
        accuracy = [m[f"id_head_{bp}_accuracy"] for bp in ("snout", "tailtip")]
        assert all(math.isnan(a) or 0 <= a <= 1 for a in accuracy)

    poses = _h5_poses(result.files["predictions"], 2)
    df = pd.read_hdf(result.files["predictions"])
    assert list(df.columns.get_level_values("individuals").unique()) == ["mouse1", "mouse2"]
    split = yaml.safe_load(next((multi.parent / "training-datasets").rglob(
        "Documentation_data-*.yaml")).read_text())
    images = split["train_images"]
    again = compute_metrics(_labels(multi, images), {p: poses[p] for p in images},
                            pcutoff=0.4)
    train = {k: v for k, v in result.metrics["train"].items() if not k.startswith("id_head")}
    assert again == pytest.approx(train, nan_ok=True)
