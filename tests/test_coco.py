"""COCOLoader on a COCO file written from a synthetic DeepLabCut project: the same labels as the
project, training through the Python API and ``dlc train --coco``, and bad files refused."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from dlc_cli.main import cli
from dlc_train.config import ConfigError, make_pytorch_pose_config
from dlc_train.data.coco import COCOError, COCOLoader, coco_project_config, read_coco
from dlc_train.data.dataset import PoseDataset
from dlc_train.data.dlcloader import DLCLoader
from dlc_train.data.transforms import build_transforms
from dlc_train.runners.snapshots import SnapshotError, load_snapshot
from dlc_train.synthetic import BODYPARTS, SKELETON, SyntheticSpec, generate_project

# Small and quick: no crop (the frames are 64 x 48), evaluated and saved every epoch.
OVERRIDES = {"data.train.crop_sampling": None, "runner.eval_interval": 1,
             "runner.snapshots.save_epochs": 1}


def write_coco(project_config: Path, dest: Path, n_test: int = 2) -> Path:
    """A COCO keypoint dataset (DeepLabCut's layout) holding a synthetic project's labels: the
    first images for test.json, the others for train.json; keypoints v=2, unlabeled v=0."""
    loader = DLCLoader(project_config)
    labels = loader.labels
    (dest / "annotations").mkdir(parents=True)
    (dest / "images").mkdir()
    category = {"id": 1, "name": "mouse", "supercategory": "animal",
                "keypoints": list(BODYPARTS),
                "skeleton": [[BODYPARTS.index(a) + 1, BODYPARTS.index(b) + 1]
                             for a, b in SKELETON]}
    splits = {"test.json": range(n_test), "train.json": range(n_test, len(labels))}
    for name, rows in splits.items():
        images, annotations = [], []
        for row in rows:
            rel = labels.image_paths[row]
            shutil.copy(loader.project.project_path / rel, dest / "images" / Path(rel).name)
            images.append({"id": row, "file_name": Path(rel).name, "width": 64, "height": 48})
            for animal in labels.keypoints[row]:
                kps = animal.copy()
                if not (kps[:, 2] > 0).any():
                    continue
                labeled = kps[:, 2] > 0
                xy = kps[labeled, :2]
                annotations.append({
                    "id": len(annotations) + 1, "image_id": row, "category_id": 1,
                    "keypoints": kps.reshape(-1).tolist(), "num_keypoints": int(labeled.sum()),
                    "bbox": [float(xy[:, 0].min()), float(xy[:, 1].min()),
                             float(np.ptp(xy[:, 0])), float(np.ptp(xy[:, 1]))],
                    "area": float(np.ptp(xy[:, 0]) * np.ptp(xy[:, 1])), "iscrowd": 0})
        doc = {"images": images, "annotations": annotations, "categories": [category]}
        (dest / "annotations" / name).write_text(json.dumps(doc))
    return dest


@pytest.fixture
def coco(tmp_path) -> Path:
    spec = SyntheticSpec(seed=0, width=64, height=48, num_labeled_frames=6, num_video_frames=1,
                         body_length=0.3, net_type="resnet_tiny")
    project = generate_project(tmp_path / "project", spec)
    return write_coco(project.config_path, tmp_path / "coco")


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_loader_holds_the_projects_labels(coco, tmp_path):
    data = read_coco(coco / "annotations" / "train.json", coco / "images")
    assert data.bodyparts == list(BODYPARTS)
    assert data.skeleton == [[BODYPARTS.index(a), BODYPARTS.index(b)] for a, b in SKELETON]
    cfg = make_pytorch_pose_config(coco_project_config(data, 1, coco),
                                   coco / "model" / "pytorch_config.yaml", net_type="resnet_tiny")
    loader = COCOLoader(coco, coco / "model" / "pytorch_config.yaml", model_config=cfg)
    assert loader.bodyparts == list(BODYPARTS) and loader.individuals == ["individual0"]
    project = DLCLoader(tmp_path / "project" / "synthetic-synth-2024-01-01" / "config.yaml")
    truth = {Path(p).name: k for p, k in
             zip(project.labels.image_paths, project.labels.keypoints)}
    train, test = loader.samples("train"), loader.samples("test")
    assert len(train) == 4 and len(test) == 2
    for path, kps in train + test:
        np.testing.assert_array_equal(kps, truth[Path(path).name])
    dataset = loader.create_dataset(build_transforms({"normalize_images": True}), mode="test")
    assert isinstance(dataset, PoseDataset) and len(dataset) == 2
    item = dataset[0]
    assert tuple(item["image"].shape) == (3, 48, 64)
    np.testing.assert_array_equal(item["annotations"]["keypoints"].numpy(), test[0][1])
    with pytest.raises(ValueError, match="unknown mode 'valid'"):
        loader.create_dataset(None, mode="valid")


def test_several_animals_per_image_and_crowd_regions(coco):
    def add_animal_and_crowd(doc):
        first = dict(doc["annotations"][0], id=100)
        first["keypoints"] = [v + (5 if i % 3 < 2 else 0)
                              for i, v in enumerate(first["keypoints"])]
        crowd = dict(doc["annotations"][0], id=101, iscrowd=1)
        doc["annotations"] += [first, crowd]

    _edit(coco / "annotations" / "train.json", add_animal_and_crowd)
    probe = COCOLoader(coco, coco / "m" / "pytorch_config.yaml", model_config={})
    assert probe.num_individuals == 2 and probe.individuals == ["individual0", "individual1"]
    samples = dict(probe.samples("train"))
    two = [k for k in samples.values() if (k[1, :, 2] > 0).any()]
    assert len(two) == 1  # the crowd region is no animal
    np.testing.assert_allclose(two[0][1, :, :2], two[0][0, :, :2] + 5)
    single = [k for k in samples.values() if not (k[1, :, 2] > 0).any()]
    assert all(k.shape == (2, 5, 3) and (k[1] == 0).all() for k in single)
    project = coco_project_config(probe.train_data, probe.num_individuals, coco)
    assert project["multianimalproject"] and project["individuals"] == ["individual0",
                                                                        "individual1"]
    cfg = make_pytorch_pose_config(project, coco / "m" / "pytorch_config.yaml",
                                   net_type="resnet_tiny")
    single_cfg = make_pytorch_pose_config(coco_project_config(probe.train_data, 1, coco),
                                          coco / "m" / "pytorch_config.yaml",
                                          net_type="resnet_tiny")
    COCOLoader(coco, coco / "m" / "pytorch_config.yaml", model_config=cfg)
    with pytest.raises(COCOError, match="images hold up to 2 animals but the model config"):
        COCOLoader(coco, coco / "m" / "pytorch_config.yaml", model_config=single_cfg)


def test_dlc_train_coco_then_resume_through_the_python_api(coco, one_thread):
    from dlc_train.apis.train_loader import train

    args = ["train", "--coco", str(coco), "--net-type", "resnet_tiny", "--epochs", "1",
            "--batch-size", "2", "--device", "cpu", "--no-progress"]
    for key, value in OVERRIDES.items():
        args += ["--set", f"{key}={'null' if value is None else value}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    folder = coco / "experiments" / "resnet_tiny" / "train"
    assert result.output.strip().splitlines()[-1] == f"snapshots in {folder}"
    cfg = yaml.safe_load((folder / "pytorch_config.yaml").read_text())
    assert cfg["metadata"]["bodyparts"] == list(BODYPARTS)
    assert cfg["data"]["train"]["crop_sampling"] is None
    snap = load_snapshot(folder / "snapshot-001.pt")
    assert snap["metadata"]["epoch"] == 1 and "metrics/test.rmse" in snap["metadata"]["metrics"]

    # The Python API, as DeepLabCut's: loader + run config; one more epoch from the snapshot.
    loader = COCOLoader(coco, folder / "pytorch_config.yaml")
    run_config = dict(loader.model_cfg, train_settings=dict(loader.model_cfg["train_settings"],
                                                            epochs=2, batch_size=2))
    before = (folder / "pytorch_config.yaml").read_bytes()
    assert train(loader, run_config, device="cpu", resume=True) == folder
    assert load_snapshot(folder / "snapshot-002.pt")["metadata"]["epoch"] == 2
    assert (folder / "pytorch_config.yaml").read_bytes() == before
    # Again from epoch 1 without overwrite: refused, nothing changes.
    snapshots = _tree(folder)
    with pytest.raises(SnapshotError, match=r"already holds \d snapshot\(s\), the latest "
                                            r"snapshot-002.pt \(epoch 2\)"):
        train(loader, run_config, device="cpu")
    assert _tree(folder) == snapshots


def _break_keypoint_count(doc):
    doc["annotations"][1]["keypoints"] = doc["annotations"][1]["keypoints"][:12]


def _break_num_keypoints(doc):
    doc["annotations"][0]["num_keypoints"] = 2


def _unknown_image(doc):
    doc["annotations"][0]["image_id"] = 999


def _no_keypoint_names(doc):
    doc["categories"][0].pop("keypoints")


@pytest.mark.parametrize("change,message", [
    (_break_keypoint_count, "has 12 keypoint values, but the category lists 5 keypoints"),
    (_break_num_keypoints, "num_keypoints is 2 but 5 keypoints have v > 0: fix num_keypoints"),
    (_unknown_image, "names image 999, which is not in images"),
    (_no_keypoint_names, "no category lists 'keypoints'"),
])
def test_bad_annotations_are_one_line_and_write_nothing(coco, change, message):
    _edit(coco / "annotations" / "train.json", change)
    before = _tree(coco)
    with pytest.raises(COCOError) as info:
        read_coco(coco / "annotations" / "train.json", coco / "images")
    assert message in str(info.value) and "train.json" in str(info.value)
    assert "\n" not in str(info.value)
    result = CliRunner().invoke(cli, ["train", "--coco", str(coco), "--net-type", "resnet_tiny",
                                      "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert message in result.output
    assert _tree(coco) == before  # no config, no snapshot, nothing


def test_missing_images_and_files(coco):
    kept = (coco / "images" / "img0003.png").read_bytes()
    (coco / "images" / "img0003.png").unlink()
    with pytest.raises(COCOError, match=r"train.json: 1 of 4 images are missing under .*images "
                                        r"\(first: img0003.png\): copy them there or fix"):
        read_coco(coco / "annotations" / "train.json", coco / "images")
    (coco / "images" / "img0003.png").write_bytes(kept)
    with pytest.raises(COCOError, match="val.json not found"):
        COCOLoader(coco, coco / "m.yaml", test_json_filename="val.json", model_config={})
    (coco / "annotations" / "test.json").write_text("{not json")
    with pytest.raises(COCOError, match=r"test.json is not valid JSON \(.*line 1\)"):
        read_coco(coco / "annotations" / "test.json", coco / "images")
    with pytest.raises(ConfigError, match="model config .* not found"):
        COCOLoader(coco, coco / "none.yaml", test_json_filename=None)


def test_labels_naming_bodyparts_the_config_lacks(coco):
    def rename(doc):
        doc["categories"][0]["keypoints"][3] = "tail_base"
        doc["categories"][0].pop("skeleton")

    data = read_coco(coco / "annotations" / "train.json", coco / "images")
    config = coco / "model" / "pytorch_config.yaml"
    cfg = make_pytorch_pose_config(coco_project_config(data, 1, coco), config,
                                   net_type="resnet_tiny")
    _edit(coco / "annotations" / "train.json", rename)
    _edit(coco / "annotations" / "test.json", rename)
    with pytest.raises(COCOError, match=r"train.json names bodyparts the model config .* does "
                                        r"not match \(it lacks \['tail_base'\]\): make a new"):
        COCOLoader(coco, config, model_config=cfg)
    _edit(coco / "annotations" / "test.json", lambda d: d["categories"][0].update(
        keypoints=list(BODYPARTS)))
    with pytest.raises(COCOError, match="both splits need the same category keypoints"):
        COCOLoader(coco, config, model_config={})


def test_cli_needs_a_project_or_a_coco_folder(coco):
    for args in (["train"], ["train", "config.yaml", "--coco", str(coco)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1
        assert "give a project's CONFIG or --coco DIR" in result.output
