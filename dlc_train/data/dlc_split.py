"""The train/test split of a shuffle made by DeepLabCut itself.

DeepLabCut's ``create_training_dataset`` keeps a shuffle's split only in
``training-datasets/.../Documentation_data-<Task>_<pct>shuffle<n>.pickle``: a list
``[data, train_indices, test_indices, train_fraction]`` whose indices are rows of the merged
labels it writes beside it (``CollectedData_<scorer>.h5``, in its own row order, not ours).
Reading that split lets a DeepLabCut project's shuffle train, evaluate and compare here on the
same images as in DeepLabCut.

A pickle can run code when loaded, so it is read with an unpickler that builds only builtin
containers and numpy arrays/scalars (what DeepLabCut writes there) and refuses anything else.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from dlc_train.data.project import ProjectError, read_label_file

# The globals DeepLabCut's documentation pickle needs: numpy arrays, dtypes and scalars
# (numpy 1.x and 2.x module names).
_ALLOWED = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it needs {module}.{name}, which a DeepLabCut split "
                                         "file never holds")
        return super().find_class(module, name)


def read_deeplabcut_split(pickle_path: Path, merged_labels: Path) -> tuple[list[str], list[str]]:
    """Sorted ``labeled-data/<video>/<image>`` paths of the train and test images.

    Raises:
        ProjectError: the pickle is unreadable or not a DeepLabCut split, the merged labels
            file is missing, or an index falls outside it.
    """
    try:
        with open(pickle_path, "rb") as f:
            doc = _ArraysOnly(f).load()
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError,
            TypeError) as err:
        raise ProjectError(f"cannot read DeepLabCut's split {pickle_path}: {err}") from None
    if not (isinstance(doc, (list, tuple)) and len(doc) == 4):
        raise ProjectError(f"{pickle_path} is not a DeepLabCut split file (expected [data, "
                           "train indices, test indices, fraction])")
    if not merged_labels.is_file():
        raise ProjectError(f"DeepLabCut's split {pickle_path.name} indexes the rows of "
                           f"{merged_labels}, which is missing: restore it, or delete the "
                           "pickle to make a new split here")
    paths = list(read_label_file(merged_labels).index)
    try:
        train, test = ([paths[int(i)] for i in doc[part]] for part in (1, 2))
    except (IndexError, TypeError, ValueError):
        raise ProjectError(f"{pickle_path} names rows that {merged_labels} does not have "
                           f"({len(paths)} rows)") from None
    return sorted(train), sorted(test)
