"""Published weights to start training from: ImageNet backbones (timm's checkpoints, DeepLabCut's
CSPNeXt ones), COCO detectors (torchvision's), and DeepLabCut's SuperAnimal models.

Modules: ``hub`` (cache locations, offline mode, fetching), ``sources`` (which file for which
name), ``apply`` (loading into our modules with strict keys; the ``pretrained_weights()``
switch), ``superanimal`` (names, configs, model folders), ``weight_init`` (DeepLabCut's
``train_settings.weight_init``), ``training`` (building models to train). See
docs/pretrained.md.
"""
from dlc_train.models.pretrained.apply import (load_pretrained_backbone, load_pretrained_detector,
                                               pretrained_weights, pretrained_weights_enabled)
from dlc_train.models.pretrained.hub import (HubFile, MissingWeightsError,
                                             PretrainedWeightsError, UrlFile, fetch,
                                             hf_cache_dir, offline, torch_hub_checkpoints_dir)
from dlc_train.models.pretrained.sources import (cspnext_source, detector_source,
                                                 published_weights, timm_source)
from dlc_train.models.pretrained.superanimal import (fetch_superanimal, superanimal_names,
                                                     superanimal_pytorch_config,
                                                     write_superanimal_model)
from dlc_train.models.pretrained.training import (build_detector_for_training,
                                                  build_pose_model_for_training)
from dlc_train.models.pretrained.weight_init import (WeightInit, apply_detector_weight_init,
                                                     apply_pose_weight_init,
                                                     superanimal_weight_init)

__all__ = ["HubFile", "MissingWeightsError", "PretrainedWeightsError", "UrlFile", "WeightInit",
           "apply_detector_weight_init", "apply_pose_weight_init", "build_detector_for_training",
           "build_pose_model_for_training", "cspnext_source", "detector_source", "fetch",
           "fetch_superanimal", "hf_cache_dir", "load_pretrained_backbone",
           "load_pretrained_detector", "offline", "pretrained_weights",
           "pretrained_weights_enabled", "published_weights", "superanimal_names",
           "superanimal_pytorch_config", "superanimal_weight_init", "timm_source",
           "torch_hub_checkpoints_dir", "write_superanimal_model"]
