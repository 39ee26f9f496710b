from dlc_train.models.target_generators.base import TARGET_GENERATORS, BaseGenerator
