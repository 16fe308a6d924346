"""erasekit: concept erasure for diffusion models, built on diffusers."""

from .adversarial import AdversarialConfig
from .api import EraseResult, erase
from .attacks import AttackRun, attack, register_attack
from .erase.class_data import ClassDataConfig
from .erase.methods import (
    ESDConfig,
    FinetuneConfig,
    GAConfig,
    OneShotConfig,
    RetrainConfig,
    RLConfig,
    SalUnConfig,
    UCEConfig,
    register_method,
)
from .erase.rum import RefineConfig
from .erase.saliency import compute_saliency_mask
from .erase.text import TextConceptConfig
from .erase.trainer import TrainConfig
from .errors import ConfigError, ErasekitError
from .eval.suite import EvalSuite, Sampling
from .evaluation import evaluate
from .pipelines.loading import bundled_path, load_pipeline
from .recipe import EraseConfig
from .version import __version__

__all__ = [
    "AdversarialConfig", "AttackRun", "ClassDataConfig", "ConfigError", "ESDConfig", "EraseConfig", "EraseResult", "ErasekitError", "EvalSuite",
    "FinetuneConfig", "GAConfig", "OneShotConfig", "RLConfig", "RefineConfig", "RetrainConfig", "SalUnConfig", "Sampling",
    "TextConceptConfig", "TrainConfig", "UCEConfig", "__version__", "attack", "bundled_path", "compute_saliency_mask", "erase",
    "evaluate", "load_pipeline", "register_attack", "register_method",
]
