"""Real SIGKILLs of `erasekit eval` in a subprocess (tests/kill_worker.py), then the same command again:
it continues from the images already written and ends with the report, results and images of an
uninterrupted run."""

import hashlib
import json
import random
from pathlib import Path

import pytest

from erasekit.pipelines.generation import _drop_partial_line

ROOT = Path(__file__).parents[2]
SMALL = ["--model", "bundled:digits-cfg", "--suite", str(ROOT / "configs" / "eval" / "digits.yaml"),
         "--samples-per-class", "3", "--num-inference-steps", "8", "--eval-batch-size", "4", "--forget", "0"]


def _command(out: Path) -> list[str]:
    return ["eval", *SMALL, "--output", str(out)]


def _outcome(out: Path) -> dict:
    images = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted((out / "images").rglob("*")) if p.is_file() and not p.name.startswith("manifest")}
    return {"metrics": json.loads((out / "report.json").read_text())["metrics"],
            "results": (out / "results.jsonl").read_text(), "images": images}


@pytest.fixture(scope="module")
def straight(tmp_path_factory, erasekit_process):
    out = tmp_path_factory.mktemp("straight") / "out"
    seconds = erasekit_process.timed(_command(out))
    return {**_outcome(out), "seconds": seconds}


def _finish_and_check(cli, straight, out: Path) -> None:
    done = cli.run(_command(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    got = _outcome(out)
    assert got["images"] == straight["images"] and len(got["images"]) == 30
    assert got["results"] == straight["results"] and got["metrics"] == straight["metrics"]
    assert not (out.parent / ".out.erasekit-partial").exists()


POINTS = [
    pytest.param("erasekit.pipelines.generation:save_image", 5, "before", "-", id="image-5"),
    pytest.param("erasekit.pipelines.generation:save_image", 13, "after", "-", id="image-13-written"),
    pytest.param("erasekit.eval.evaluate:write_json", 1, "torn", r"report\.json$", id="report-written-half"),
    pytest.param("os:replace", 1, "before", r"erasekit-partial$", id="commit-rename"),
]


@pytest.mark.slow
@pytest.mark.parametrize("target, n, when, match", POINTS)
def test_eval_killed_at_a_named_point_continues_to_the_same_report(erasekit_process, straight, tmp_path, target, n,
                                                                   when, match):
    out = tmp_path / "out"
    erasekit_process.kill_at(target, n, when, match, _command(out))
    assert not out.exists()
    _finish_and_check(erasekit_process, straight, out)


@pytest.mark.slow
def test_eval_killed_at_a_random_moment_continues_to_the_same_report(erasekit_process, straight, tmp_path):
    out = tmp_path / "out"
    erasekit_process.kill_after(random.Random(0).uniform(0.3, 0.9) * straight["seconds"], _command(out))
    if out.exists():  # the commit came first (the kill, if any, hit the exit): the report is whole
        assert _outcome(out) == {k: straight[k] for k in ("metrics", "results", "images")}
        return
    _finish_and_check(erasekit_process, straight, out)


def test_a_manifest_line_cut_short_is_dropped_before_more_lines_are_appended(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"path": "a.png"}\n{"path": "b.p')
    _drop_partial_line(manifest)
    assert manifest.read_text() == '{"path": "a.png"}\n'
    manifest.write_text('{"path": "a.png"}\n')
    _drop_partial_line(manifest)
    assert manifest.read_text() == '{"path": "a.png"}\n'
