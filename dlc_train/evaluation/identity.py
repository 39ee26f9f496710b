"""Identity accuracy of an identity head, as DeepLabCut 3 computes it
(``deeplabcut.core.metrics.compute_identity_scores``).

For each image and bodypart, every labeled keypoint of individual ``j`` is paired with a
distinct predicted keypoint of that bodypart (:func:`~dlc_train.evaluation.matching.
closest_neighbors`, closest pairs first); the predicted identity is the argmax of the identity
scores at that prediction. A bodypart's accuracy is the fraction of paired keypoints whose
predicted identity is ``j``. Keypoints left unpaired do not count.

Animals the model did not find at all take part as DeepLabCut's padding does: at (-1, -1), with
the identity scores read there (the map's corner). A labeled keypoint can pair with such a
slot when every closer prediction is taken; DeepLabCut counts those pairs, so they count here.
"""
from __future__ import annotations

import numpy as np

from dlc_train.evaluation.matching import closest_neighbors


def identity_accuracy(bodyparts: list[str], ground_truth: dict[str, np.ndarray],
                      predictions: dict[str, np.ndarray],
                      identity_scores: dict[str, np.ndarray]) -> dict[str, float]:
    """``{"<bodypart>_accuracy": fraction}`` (NaN for a bodypart without any paired keypoint).

    Args:
        bodyparts: the K bodypart names.
        ground_truth: image -> (individuals, K, 3) x, y, visibility (> 0: labeled).
        predictions: image -> (animals, K, 3+) x, y (NaN: missing), score.
        identity_scores: image -> (animals, K, individuals) identity head scores at each
            predicted keypoint.
    """
    right = np.zeros(len(bodyparts))
    paired = np.zeros(len(bodyparts))
    for image, gt in ground_truth.items():
        gt = np.array(gt, dtype=np.float64)
        gt[gt[..., 2] <= 0, :2] = np.nan
        pred = np.array(predictions[image], dtype=np.float64)[..., :2]
        pred[np.isnan(pred).all(axis=(1, 2))] = -1.0  # DeepLabCut's padding of absent animals
        scores = np.asarray(identity_scores[image])
        for k in range(len(bodyparts)):
            labeled = np.flatnonzero(np.isfinite(gt[:, k, :2]).all(axis=1))
            found = np.isfinite(pred[:, k]).all(axis=1)
            neighbors = closest_neighbors(gt[labeled, k, :2], pred[found, k])
            ok = neighbors != -1
            guessed = np.argmax(scores[found, k][neighbors[ok]], axis=1)
            right[k] += np.sum(guessed == labeled[ok])
            paired[k] += ok.sum()
    return {f"{bp}_accuracy": float(right[k] / paired[k]) if paired[k] else float("nan")
            for k, bp in enumerate(bodyparts)}
