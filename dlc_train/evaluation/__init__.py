"""Evaluation of trained snapshots as DeepLabCut 3 evaluates them.

- :mod:`~dlc_train.evaluation.metrics`: RMSE (all / above pcutoff / per keypoint), mAP and mAR
  over OKS thresholds, PCK; :mod:`~dlc_train.evaluation.matching`: OKS and the matchings;
  :mod:`~dlc_train.evaluation.identity`: identity-head accuracy.
- :mod:`~dlc_train.evaluation.predict`: a snapshot's predictions on labeled images.
- :mod:`~dlc_train.evaluation.selection`: snapshots, bodyparts and pcutoff to evaluate.
- :mod:`~dlc_train.evaluation.results` / :mod:`~dlc_train.evaluation.plots`: DeepLabCut's
  result files and labeled images.

``dlc_train.apis.evaluate_network`` puts them together. Only the metrics are imported here (the
training runner uses them); the other modules load torch and are imported where used.
"""
from dlc_train.evaluation.matching import oks
from dlc_train.evaluation.metrics import OKS_THRESHOLDS, compute_metrics

__all__ = ["OKS_THRESHOLDS", "compute_metrics", "oks"]
