"""`erasekit` in this process, SIGKILLed by itself at a chosen point: the Nth call of a function.

    python kill_worker.py TARGET N WHEN MATCH -- ERASEKIT ARGS...

TARGET is `module:function` or `module:Class.method`. The kill comes at the Nth call with a string or
path argument in which the regular expression MATCH is found (`-` counts every call). WHEN is `before` (the call never starts),
`after` (it returned) or `torn` (it returned, then the file or folder it wrote, its first existing
path argument, loses the second half of its bytes or half of its files, as a write cut short by a
power loss would leave it) or `halfway` (instead of the call, half the files of its first path
argument are deleted: a removal such as `shutil.rmtree` cut short). The kill is a real SIGKILL: no
handler, `finally` or atexit runs.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import signal
import sys
from pathlib import Path


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _paths(args, kwargs) -> list[str]:
    return [str(a) for a in (*args, *kwargs.values()) if isinstance(a, (str, os.PathLike))]


def _tear(paths: list[str]) -> None:
    for name in paths:
        path = Path(name)
        if path.is_file():
            os.truncate(path, path.stat().st_size // 2)
            return
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            for p in files[len(files) // 2:]:
                p.unlink()
            return
    raise SystemExit(f"kill_worker: 'torn' found no path argument that exists: {paths}")


def _resolve(target: str):
    module_name, _, attr = target.partition(":")
    owner = importlib.import_module(module_name)
    *outer, name = attr.split(".")
    for part in outer:
        owner = getattr(owner, part)
    return owner, name


def arm(target: str, n: int, when: str, match: str) -> None:
    owner, name = _resolve(target)
    original = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        nonlocal calls
        paths = _paths(args, kwargs)
        if match == "-" or any(re.search(match, p) for p in paths):
            calls += 1
        if calls == n and when in ("before", "halfway"):
            if when == "halfway":
                _tear(paths)
            _die()
        out = original(*args, **kwargs)
        if calls == n:
            if when == "torn":
                _tear(paths)
            _die()
        return out

    if isinstance(owner, type):
        setattr(owner, name, wrapper)
        return
    for module in list(sys.modules.values()):  # every `from owner import name [as alias]` binding so far
        for key, value in list(getattr(module, "__dict__", {}).items()):
            if value is original:
                setattr(module, key, wrapper)


def main(argv: list[str]) -> int:
    target, n, when, match, dash, *rest = argv
    if dash != "--" or when not in ("before", "after", "torn", "halfway"):
        raise SystemExit(__doc__)
    import accelerate.checkpointing  # noqa: F401  (bind the names that are patched below)

    import erasekit.api  # noqa: F401
    import erasekit.cli

    arm(target, int(n), when, match)
    code = erasekit.cli.main(rest)
    raise SystemExit(f"kill_worker: the run ended (exit {code}) before call {n} of {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
