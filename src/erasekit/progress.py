"""Progress of erasekit's long loops (training, generation, scoring), fitted to where the output goes: a bar on
a terminal, a one-line log record every `ERASEKIT_PROGRESS_INTERVAL` seconds (and at the end) when stderr is
a file, a pipe or CI, and nothing on the processes other than the main one.

`ERASEKIT_PROGRESS` forces a mode: `bar`, `log` or `off`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from tqdm.auto import tqdm

logger = logging.getLogger("erasekit.progress")
MODES = ("bar", "log", "off")
DEFAULT_INTERVAL_S = 15.0


def _mode() -> str:
    forced = os.environ.get("ERASEKIT_PROGRESS", "").strip().lower()
    if forced in MODES:
        return forced
    stream = sys.stderr
    return "bar" if getattr(stream, "isatty", lambda: False)() and not os.environ.get("CI") else "log"


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("ERASEKIT_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """`with Progress(300, "erase", unit="step") as p: ... p.update(loss=0.1)`.

    Args:
        total: the loop's length (None: unknown, no ETA).
        desc: what the loop does, first on each line.
        initial: steps already done (a resumed run).
        unit: what one step is ("step", "image", "batch").
        enabled: False on processes other than the main one; None: on where the launcher's `RANK` (as
            `accelerate launch` and torchrun set it) is 0 or unset.
    """

    def __init__(self, total: int | None, desc: str, *, initial: int = 0, unit: str = "step",
                 enabled: bool | None = None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        if enabled is None:
            enabled = os.environ.get("RANK", "0") == "0"
        self.mode = _mode() if enabled else "off"
        self.interval = _interval()
        self.postfix: dict[str, Any] = {}
        self._start = self._last = time.monotonic()
        self._start_n = self._logged_n = initial
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr,
                         leave=False) if self.mode == "bar" else None

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        self.postfix.update(postfix)
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: _short(v) for k, v in self.postfix.items()}, refresh=False)
        elif self.mode == "log" and time.monotonic() - self._last >= self.interval:
            self._log()

    def line(self) -> str:
        """The log record: `desc: 150/300 step (50%), loss 0.0123, 4.2 step/s, ETA 0:00:36`."""
        elapsed = time.monotonic() - self._start
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}" if self.total else f"{self.desc}: {self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts += [f"{k} {_short(v)}" for k, v in self.postfix.items()]
        parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.3g} s/{self.unit}")
        if self.total and rate > 0:
            parts.append(f"ETA {_clock(max(0, self.total - self.n) / rate)}" if self.n < self.total
                         else f"done in {_clock(elapsed)}")
        return ", ".join(parts)

    def _log(self) -> None:
        self._last, self._logged_n = time.monotonic(), self.n
        logger.info(self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "log" and self.n > self._logged_n:
            self._log()
        self.mode = "off"

    @classmethod
    def wrap(cls, items, desc: str, **kwargs):
        """Iterate over `items` with progress (counted as each item is taken)."""
        with cls(len(items), desc, **kwargs) as progress:
            for item in items:
                yield item
                progress.update(1)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
