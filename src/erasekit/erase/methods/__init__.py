"""The catalog: importing it registers every method (one module each, as peft's tuners).

Adding a method is one new module here (its config dataclass, its class and a `register_method` call)
and one line below.
"""

from ..registry import METHODS, Method, MethodSpec, Shard, get_method, register_method
from .esd import ESDConfig, ESDMethod
from .finetune import FinetuneConfig, FinetuneMethod
from .ga import GAConfig, GAMethod
from .oneshot import OneShotConfig, OneShotMethod
from .retrain import RetrainConfig, RetrainMethod
from .rl import RLConfig, RLMethod
from .salun import SalUnConfig, SalUnMethod
from .uce import UCEConfig, UCEMethod

__all__ = [
    "METHODS", "Method", "MethodSpec", "Shard", "get_method", "register_method",
    "ESDConfig", "ESDMethod", "FinetuneConfig", "FinetuneMethod", "GAConfig", "GAMethod", "OneShotConfig",
    "OneShotMethod", "RLConfig", "RLMethod", "RetrainConfig", "RetrainMethod", "SalUnConfig", "SalUnMethod",
    "UCEConfig", "UCEMethod",
]
