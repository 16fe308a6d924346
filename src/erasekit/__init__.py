"""erasekit: concept erasure for diffusion models, built on diffusers."""

__version__ = "0.1.0"

from .api import EraseConfig, EraseResult, erase  # noqa: E402
from .erase.methods import RLConfig, SalUnConfig, register_method  # noqa: E402
from .erase.saliency import compute_saliency_mask  # noqa: E402
from .errors import ConfigError, ErasekitError  # noqa: E402
from .eval.evaluate import evaluate  # noqa: E402
from .eval.suite import EvalSuite, Sampling  # noqa: E402
from .pipelines.loading import bundled_path, load_pipeline  # noqa: E402

__all__ = [
    "ConfigError", "EraseConfig", "EraseResult", "ErasekitError", "EvalSuite", "RLConfig", "SalUnConfig", "Sampling",
    "bundled_path", "compute_saliency_mask", "erase", "evaluate", "load_pipeline", "register_method",
]
