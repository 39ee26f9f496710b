"""A shuffle split as DeepLabCut's create_training_dataset leaves it (for tests)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from dlc_train.data.project import label_files, load_project, read_label_file


def write_deeplabcut_shuffle(config: Path, shuffle: int, train_rows: list[int],
                             test_rows: list[int], order: list[int] | None = None,
                             fraction: float = 0.95) -> tuple[Path, list[str]]:
    """Writes the merged labels (rows in ``order``) and the documentation pickle
    ``[data, train_indices, test_indices, fraction]`` with numpy arrays, as DeepLabCut does.

    Returns the pickle's path and the merged file's image paths (row order).
    """
    project = load_project(config)
    merged = pd.concat([pd.read_hdf(p) for p in label_files(project)])
    if order is not None:
        merged = merged.iloc[order]
    pct = int(100 * fraction)
    folder = (project.project_path / "training-datasets" / f"iteration-{project.iteration}"
              / f"UnaugmentedDataSet_{project.task}{project.date}")
    folder.mkdir(parents=True, exist_ok=True)
    merged_path = folder / f"CollectedData_{project.scorer}.h5"
    merged.to_hdf(merged_path, key="df_with_missing", mode="w")
    data = [{"image": ("labeled-data", "v", f"img{i}.png"), "size": np.array([3, 48, 64]),
             "joints": {0: np.zeros((4, 3), dtype=np.float64)}} for i in train_rows]
    path = folder / f"Documentation_data-{project.task}_{pct}shuffle{shuffle}.pickle"
    path.write_bytes(pickle.dumps([data, np.array(train_rows), np.array(test_rows), fraction]))
    return path, list(read_label_file(merged_path).index)
