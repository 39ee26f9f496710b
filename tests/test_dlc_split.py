"""A shuffle made by DeepLabCut keeps DeepLabCut's split (its documentation pickle), read safely."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from dlc_train.data.dlcloader import DLCLoader
from dlc_train.data.project import ProjectError
from dlc_train.synthetic import SyntheticSpec, generate_project
from helpers.deeplabcut_shuffle import write_deeplabcut_shuffle


@pytest.fixture
def project(tmp_path) -> Path:
    spec = SyntheticSpec(seed=0, width=64, height=48, num_labeled_frames=10, num_video_frames=1,
                         body_length=0.3, net_type="resnet_tiny")
    return generate_project(tmp_path, spec).config_path


def test_deeplabcut_split_is_used_by_row_of_its_merged_labels(project):
    # Rows reversed: the indices must be read against DeepLabCut's merged file, not our order.
    order = list(range(9, -1, -1))
    pickle_path, paths = write_deeplabcut_shuffle(project, 1, train_rows=[0, 2, 3, 5, 6, 7, 8, 9],
                                             test_rows=[1, 4], order=order)
    loader = DLCLoader(project, shuffle=1)
    assert loader.test_images == sorted([paths[1], paths[4]])
    assert loader.train_images == sorted(p for i, p in enumerate(paths) if i not in (1, 4))
    # Reversed rows: the first row of the merged file is the last image in our (sorted) order.
    assert paths[1] == sorted(paths)[8]
    # Nothing of ours written: DeepLabCut's shuffle stays DeepLabCut's.
    assert not loader.split_path.exists() and pickle_path.is_file()
    assert [s[0] for s in loader.samples("test")] == \
        [str(loader.project.project_path / p) for p in loader.test_images]


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/dlc-split-pwned"),))


def test_a_pickle_that_would_run_code_is_refused(project):
    pickle_path, _ = write_deeplabcut_shuffle(project, 1, [0, 1], [2])
    pickle_path.write_bytes(pickle.dumps([_Evil(), [0, 1], [2], 0.95]))
    Path("/tmp/dlc-split-pwned").unlink(missing_ok=True)
    with pytest.raises(ProjectError, match=r"cannot read DeepLabCut's split .*pathlib"):
        DLCLoader(project, shuffle=1)
    assert not Path("/tmp/dlc-split-pwned").exists()


def test_missing_merged_labels_or_bad_rows_are_one_clear_error(project):
    pickle_path, _ = write_deeplabcut_shuffle(project, 1, [0, 1], [2])
    merged = pickle_path.parent / "CollectedData_synth.h5"
    pickle_path.write_bytes(pickle.dumps([[], np.array([0, 1]), np.array([42]), 0.95]))
    with pytest.raises(ProjectError, match=r"names rows that .* does not have \(10 rows\)"):
        DLCLoader(project, shuffle=1)
    merged.unlink()
    with pytest.raises(ProjectError, match=r"indexes the rows of .*CollectedData_synth.h5, "
                                           r"which is missing"):
        DLCLoader(project, shuffle=1)
    pickle_path.write_bytes(pickle.dumps({"not": "a split"}))
    with pytest.raises(ProjectError, match="is not a DeepLabCut split file"):
        DLCLoader(project, shuffle=1)


def test_arguments_in_deeplabcuts_order(project):
    # DeepLabCut's DLCLoader(config, trainset_index, shuffle): positional calls mean the same.
    loader = DLCLoader(project, 0, 3)
    assert (loader.trainset_index, loader.shuffle) == (0, 3)
    assert loader.split_path.name.endswith("95shuffle3.yaml")
