"""DeepLabCut project reading and the shuffle split (real openfield data when present)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dlc_train.data.dlcloader import DLCLoader
from dlc_train.data.project import ProjectError, load_labels, load_project, read_label_file

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
OPENFIELD = SHARED / "data" / "openfield-Pranav-2018-10-30"
MULTI = SHARED / "data" / "multi_mouse-dlc_team-2022-04-12"


@pytest.fixture
def openfield(tmp_path: Path) -> Path:
    if not OPENFIELD.is_dir():
        pytest.skip(f"real data not present: {OPENFIELD}")
    dst = tmp_path / OPENFIELD.name
    shutil.copytree(OPENFIELD, dst, ignore=shutil.ignore_patterns("videos"))
    return dst


def test_openfield_project_and_labels(openfield: Path):
    project = load_project(openfield / "config.yaml")
    assert project.project_path == openfield.resolve()  # placeholder path replaced
    assert project.bodyparts == ["snout", "leftear", "rightear", "tailbase"]
    labels = load_labels(project)
    assert len(labels) == 116
    assert labels.keypoints.shape == (116, 1, 4, 3)
    assert labels.image_paths[0] == "labeled-data/m4s1/img0000.png"
    np.testing.assert_allclose(labels.keypoints[0, 0, 0], [21.521, 265.428, 2], rtol=1e-5)
    assert not np.isnan(labels.keypoints).any()


def test_openfield_csv_fallback_matches_h5(openfield: Path):
    folder = openfield / "labeled-data" / "m4s1"
    h5 = load_labels(load_project(openfield))
    (folder / "CollectedData_Pranav.h5").unlink()
    csv = load_labels(load_project(openfield))
    assert csv.image_paths == h5.image_paths
    np.testing.assert_allclose(csv.keypoints, h5.keypoints, rtol=1e-6)


def test_openfield_split_folders_and_reuse(openfield: Path):
    loader = DLCLoader(openfield / "config.yaml", shuffle=1)
    assert len(loader.train_images) == int(116 * 0.95) and len(loader.test_images) == 6
    assert not set(loader.train_images) & set(loader.test_images)
    assert loader.train_folder == (openfield.resolve() / "dlc-models-pytorch" / "iteration-0"
                                   / "openfieldOct30-trainset95shuffle1" / "train")
    assert loader.split_path == (openfield.resolve() / "training-datasets" / "iteration-0"
                                 / "UnaugmentedDataSet_openfieldOct30"
                                 / "Documentation_data-openfield_95shuffle1.yaml")
    assert loader.split_path.is_file()
    # A second load reuses the stored split even if the seeding changed.
    doc = yaml.safe_load(loader.split_path.read_text())
    doc["train_images"], doc["test_images"] = doc["train_images"][5:], (
        doc["test_images"] + doc["train_images"][:5])
    loader.split_path.write_text(yaml.safe_dump(doc))
    again = DLCLoader(openfield / "config.yaml", shuffle=1)
    assert again.test_images == doc["test_images"]
    other = DLCLoader(openfield / "config.yaml", shuffle=2)
    assert other.test_images != loader.test_images
    path, kps = again.train_samples()[0]
    assert Path(path).is_file() and kps.shape == (1, 4, 3)


def test_multianimal_format(tmp_path: Path):
    if not MULTI.is_dir():
        pytest.skip(f"real data not present: {MULTI}")
    dst = tmp_path / MULTI.name
    shutil.copytree(MULTI, dst)
    project = load_project(dst)
    assert project.project_path == dst.resolve()  # stale /Users/... path replaced
    labels = load_labels(project)
    assert labels.keypoints.shape == (5, 3, 3, 3)
    assert labels.unique_keypoints.shape == (5, 2, 3)
    np.testing.assert_allclose(labels.unique_keypoints[0, :, :2], [[500, 500], [550, 550]])


def _write_minimal(root: Path, csv_text: str | None = None, **cfg_changes) -> Path:
    cfg = {"Task": "t", "scorer": "me", "date": "Jan1", "bodyparts": ["a", "b"],
           "project_path": "/does/not/exist", "TrainingFraction": [0.5], "iteration": 0}
    cfg.update(cfg_changes)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    if csv_text is not None:
        folder = root / "labeled-data" / "v1"
        folder.mkdir(parents=True)
        (folder / "CollectedData_me.csv").write_text(csv_text)
    return root / "config.yaml"


def test_multiindex_csv_and_nan(tmp_path: Path):
    cols = pd.MultiIndex.from_product([["me"], ["a", "b"], ["x", "y"]],
                                      names=["scorer", "bodyparts", "coords"])
    index = pd.MultiIndex.from_tuples([("labeled-data", "v1", "img0.png"),
                                       ("labeled-data", "v1", "img1.png")])
    df = pd.DataFrame([[1, 2, np.nan, np.nan], [5, 6, 7, 8]], index=index, columns=cols)
    folder = tmp_path / "labeled-data" / "v1"
    folder.mkdir(parents=True)
    _write_minimal(tmp_path)
    df.to_csv(folder / "CollectedData_me.csv")
    labels = load_labels(load_project(tmp_path))
    assert labels.image_paths == ["labeled-data/v1/img0.png", "labeled-data/v1/img1.png"]
    np.testing.assert_array_equal(labels.keypoints[0, 0, :, 2], [2, 0])
    df.to_hdf(folder / "CollectedData_me.h5", key="df_with_missing")
    labels_h5 = load_labels(load_project(tmp_path))
    np.testing.assert_array_equal(labels_h5.keypoints, labels.keypoints)


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"),
    ("bad_yaml", "malformed project config"),
    ("no_bodyparts", "bodyparts"),
    ("no_labels", "no labeled data"),
    ("bad_csv", "label file"),
    ("bad_h5", "cannot read label file"),
])
def test_clear_errors(tmp_path: Path, case: str, message: str):
    if case == "missing":
        path = tmp_path / "nope.yaml"
    elif case == "bad_yaml":
        path = tmp_path / "config.yaml"
        path.write_text("Task: [unclosed\n  bodyparts: {")
    elif case == "no_bodyparts":
        path = _write_minimal(tmp_path, bodyparts=None)
    elif case == "no_labels":
        path = _write_minimal(tmp_path)
    elif case == "bad_csv":
        path = _write_minimal(tmp_path, "this,is\nnot,a\nlabel,file\n")
    else:
        path = _write_minimal(tmp_path)
        folder = tmp_path / "labeled-data" / "v1"
        folder.mkdir(parents=True)
        (folder / "CollectedData_me.h5").write_bytes(b"\x89HDF\r\n\x1a\ngarbage" * 10)
    with pytest.raises(ProjectError, match=message) as info:
        DLCLoader(path)
    assert "\n" not in str(info.value)


def test_read_label_file_rejects_flat_csv(tmp_path: Path):
    path = tmp_path / "CollectedData_me.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6\n7,8,9\n")
    with pytest.raises(ProjectError):
        read_label_file(path)


def test_dataset_gives_identity_heads_the_individual_index(tmp_path):
    """Identity targets need each row's individual index (a KeyError in training otherwise)."""
    import cv2
    import numpy as np

    from dlc_train.data.dataset import PoseDataset, collate
    from dlc_train.data.transforms import build_transforms

    image = tmp_path / "img.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    keypoints = np.full((3, 2, 3), 5.0, np.float32)
    dataset = PoseDataset([(str(image), keypoints)], build_transforms({"normalize_images": True}),
                          ["a", "b"])
    batch = collate([dataset[0], dataset[0]])
    assert batch["annotations"]["individual_ids"].tolist() == [[0, 1, 2], [0, 1, 2]]
