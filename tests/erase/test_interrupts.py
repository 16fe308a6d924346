"""Real SIGKILLs of `erasekit erase` in a subprocess, then the same command again (with
`--resume-from-checkpoint latest` where a checkpoint was finished): the run ends with the weights of an
uninterrupted run (bitwise, CPU, same seed); no output is reported complete when it is not; a staging
directory with nothing to resume is never a dead end.

Named kill points come from tests/kill_worker.py (the process SIGKILLs itself at the Nth call of a
function: loading, saliency, steps, checkpoint and output writes, the commit). Random kill points are
SIGKILLs sent from outside after a seeded random delay."""

import json
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "configs" / "digits.yaml"
SMALL = ["--forget", "8", "--max-steps", "6", "--saliency-passes", "2", "--batch-size", "16",
         "--saliency-batch-size", "32", "--evaluate", "false", "--checkpointing-steps", "2"]
RESUME = ["--resume-from-checkpoint", "latest"]
STAGING = ".out.erasekit-partial"


def _command(out: Path, *extra: str) -> list[str]:
    return ["erase", "--config", str(CONFIG), "--output-dir", str(out), *SMALL, *extra]


def _fingerprint(out: Path) -> str:
    return json.loads((out / "erasure.json").read_text())["erased_fingerprint"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, erasekit_process):
    out = tmp_path_factory.mktemp("straight") / "out"
    seconds = erasekit_process.timed(_command(out))
    return {"fingerprint": _fingerprint(out), "seconds": seconds, "logs": (out / "logs.jsonl").read_text()}


def _finish_and_check(cli, straight, out: Path, again: list[str], *extra: str) -> None:
    """The same command again finishes with the uninterrupted run's weights and log, leaving no staging."""
    done = cli.run(_command(out, *extra, *again))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert _fingerprint(out) == straight["fingerprint"]
    assert json.loads((out / "logs.jsonl").read_text().splitlines()[-1]) == \
        json.loads(straight["logs"].splitlines()[-1])
    assert [json.loads(line)["step"] for line in (out / "logs.jsonl").read_text().splitlines()] == \
        [json.loads(line)["step"] for line in straight["logs"].splitlines()]
    assert not (out.parent / STAGING).exists()
    assert not (out / "checkpoints").exists()


# (target, Nth matching call, when, match, rerun with): what is on disk at the kill is described by the id
POINTS = [
    pytest.param("erasekit.pipelines.loading:load_pipeline", 1, "before", "-", [], id="loading"),
    pytest.param("torch:Tensor.backward", 2, "before", "-", [], id="saliency-batch-2"),
    pytest.param("erasekit.erase.masks:save_mask", 1, "torn", "-", [], id="mask-written-half"),
    pytest.param("erasekit.erase.trainer:EraseTrainer._optimizer_step", 1, "before", "-", [], id="step-1"),
    pytest.param("erasekit.erase.trainer:EraseTrainer._optimizer_step", 3, "before", "-", RESUME, id="step-3"),
    pytest.param("erasekit.erase.trainer:EraseTrainer._optimizer_step", 5, "after", "-", RESUME, id="step-5-done"),
    pytest.param("accelerate:Accelerator.save_state", 1, "before", "-", RESUME, id="checkpoint-1-begun"),
    pytest.param("safetensors.torch:save_file", 1, "torn", r"\.tmp/", RESUME, id="checkpoint-1-weights-half"),
    pytest.param("torch:save", 1, "torn", "optimizer", RESUME, id="checkpoint-1-optimizer-half"),
    pytest.param("accelerate:Accelerator.save_state", 2, "after", "-", RESUME, id="checkpoint-2-not-renamed"),
    pytest.param("pathlib:Path.rename", 1, "after", r"/checkpoint-4$", RESUME, id="checkpoint-2-renamed"),
    pytest.param("shutil:rmtree", 1, "halfway", r"checkpoint-2\.erasekit-trash$", RESUME, id="old-checkpoint-deleted-half"),
    pytest.param("erasekit.pipelines.delta:save_delta", 1, "torn", "-", RESUME, id="delta-written-half"),
    pytest.param("diffusers:DiffusionPipeline.save_pretrained", 1, "after", "-", RESUME, id="weights-saved"),
    pytest.param("erasekit.api:write_json", 1, "torn", "erasure", RESUME, id="record-written-half"),
    pytest.param("shutil:rmtree", 1, "halfway", r"checkpoints\.erasekit-trash$", RESUME, id="checkpoints-deleted-half"),
    pytest.param("os:replace", 1, "before", r"erasekit-partial$", RESUME, id="commit-rename"),
]
FAST = {"saliency-batch-2", "checkpoints-deleted-half"}  # in the default run; the rest are `slow`


@pytest.mark.parametrize("target, n, when, match, again", [
    p if p.id in FAST else pytest.param(*p.values, marks=pytest.mark.slow, id=p.id) for p in POINTS])
def test_killed_at_a_named_point_reruns_to_the_same_weights(erasekit_process, straight, tmp_path, target, n, when, match,
                                                          again):
    out = tmp_path / "out"
    erasekit_process.kill_at(target, n, when, match, _command(out))
    assert not out.exists()  # nothing is reported complete before the commit
    _finish_and_check(erasekit_process, straight, out, again)


@pytest.mark.slow
def test_killed_while_an_old_output_is_replaced(erasekit_process, straight, tmp_path):
    """With --overwrite, a kill between moving the old output aside and renaming the new one into place
    leaves no output at all (never a mixed one); the same command then finishes."""
    out = tmp_path / "out"
    assert erasekit_process.run(_command(out)).returncode == 0
    (out / "stale.txt").write_text("from the old output\n")
    erasekit_process.kill_at("os:replace", 1, "after", r"erasekit-old$", _command(out, "--overwrite"))
    assert not out.exists()
    _finish_and_check(erasekit_process, straight, out, [], "--overwrite")
    assert not (out / "stale.txt").exists() and not (tmp_path / ".out.erasekit-old").exists()


@pytest.mark.slow
def test_killed_after_the_commit_is_complete_and_refuses_a_second_run(erasekit_process, straight, tmp_path):
    out = tmp_path / "out"
    erasekit_process.kill_at("erasekit.api:commit_dir", 1, "after", "-", _command(out))
    assert _fingerprint(out) == straight["fingerprint"] and not (tmp_path / STAGING).exists()
    again = erasekit_process.run(_command(out))
    assert again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_killed_at_a_random_moment_resumes_to_the_same_weights(erasekit_process, straight, tmp_path, seed):
    """SIGKILL from outside after a seeded random share of an uninterrupted run's wall time."""
    out = tmp_path / "out"
    delay = random.Random(seed).uniform(0.2, 0.95) * straight["seconds"]
    erasekit_process.kill_after(delay, _command(out))
    if out.exists():  # the commit came first (the kill, if any, hit the exit): the output is whole
        assert _fingerprint(out) == straight["fingerprint"] and not (tmp_path / STAGING).exists()
        return
    _finish_and_check(erasekit_process, straight, out, RESUME)
