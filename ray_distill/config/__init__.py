"""Experiment configuration: typed schemas and the loader."""

from ray_distill.config.load import load_config, relocate, section_dict, to_yaml
from ray_distill.config.schema import EngineConfig, ExperimentConfig

__all__ = ["EngineConfig", "ExperimentConfig", "load_config", "relocate", "section_dict", "to_yaml"]
