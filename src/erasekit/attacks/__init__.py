"""Attacks on erased models, registered like methods, judged against a base and a retrained reference.

`erasekit attack` / `erasekit.attack.attack(...)` run them (see `run.py`); each attack lives in its
own module with its config dataclass and calls `register_attack` (see `registry.py`).
"""

from . import baselines, discrete, embedding, ringabell, trajectory  # noqa: F401  (they register)
from .baselines import RandomConfig, SeedSearchConfig, TransferConfig
from .discrete import P4DConfig, UDAConfig
from .embedding import CCEConfig, SoftConfig
from .registry import ATTACKS, AttackSpec, get_attack, register_attack
from .ringabell import RingABellConfig
from .run import attack
from .settings import AttackRun
from .trajectory import TrajectoryConfig

__all__ = ["ATTACKS", "AttackRun", "AttackSpec", "CCEConfig", "P4DConfig", "RandomConfig", "RingABellConfig",
           "SeedSearchConfig", "SoftConfig", "TrajectoryConfig", "TransferConfig", "UDAConfig", "attack",
           "get_attack", "register_attack"]
