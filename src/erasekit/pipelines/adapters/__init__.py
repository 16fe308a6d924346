"""Model adapters: what erasekit needs to know about one family of pipelines, in one place.

An adapter is registered under the name of a pipeline class and found through the pipeline's class
hierarchy, so a subclass of a supported pipeline is supported too. Nothing outside this package names
a denoiser attribute (`unet`, `transformer`) or checks a pipeline's class.
"""

from __future__ import annotations

from ...errors import ConfigError
from .base import Adapter, NoisyBatch

_REGISTRY: dict[str, type[Adapter]] = {}


def register_adapter(pipeline_class_name: str, adapter_cls: type[Adapter]) -> None:
    """Use `adapter_cls` for pipelines of this class (by name, so no heavy import is needed to register)."""
    _REGISTRY[pipeline_class_name] = adapter_cls


def adapter_for(pipe) -> Adapter:
    """The adapter of `pipe`, e.g. `adapter_for(pipe).denoiser`."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in _REGISTRY:
            return _REGISTRY[cls.__name__](pipe)
    raise ConfigError(f"erasekit has no adapter for {type(pipe).__name__}; supported pipelines: "
                      f"{', '.join(sorted(_REGISTRY))}")


def supported_pipelines() -> list[str]:
    return sorted(_REGISTRY)


from .class_conditional import ClassConditionalAdapter  # noqa: E402
from .flux import FluxAdapter  # noqa: E402
from .sd3 import SD3Adapter  # noqa: E402
from .stable_diffusion import StableDiffusionAdapter, StableDiffusionXLAdapter  # noqa: E402

register_adapter("ClassConditionalPipeline", ClassConditionalAdapter)
register_adapter("StableDiffusionPipeline", StableDiffusionAdapter)
register_adapter("StableDiffusionXLPipeline", StableDiffusionXLAdapter)
register_adapter("StableDiffusion3Pipeline", SD3Adapter)
register_adapter("FluxPipeline", FluxAdapter)

__all__ = ["Adapter", "NoisyBatch", "adapter_for", "register_adapter", "supported_pipelines"]
