"""Every command shown in README.md runs, in README order, as a user would type it.

Commands run from a fresh working directory that holds `configs/`. Only model paths (Hub ids become
local replicas of the same checkpoints) and sizes (steps, images, samples) are added; a later flag
overrides an earlier one. `make test` is the command CI runs this suite with, so it is not run here.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from erasekit.cli import main
from erasekit.erase import membership
from replicas import build_replica

ROOT = Path(__file__).parents[1]
HUB_IDS = {"CompVis/stable-diffusion-v1-4": "sd14", "stabilityai/stable-diffusion-xl-base-1.0": "sdxl"}
RECIPE_REPLICA = {"sd-nudity.yaml": "sd14", "sd-object.yaml": "sd15", "sd21-nudity.yaml": "sd21",
                  "sdxl-nudity.yaml": "sdxl", "sd3-nudity.yaml": "sd3", "flux-nudity.yaml": "flux"}
SD_SIZES = ["--num-images-per-prompt", "2", "--resolution", "32", "--generation-steps", "2", "--batch-size", "2",
            "--saliency-batch-size", "2", "--max-steps", "2"]
SIZES = {
    "digits.yaml": ["--max-steps", "3", "--saliency-passes", "1", "--samples-per-class", "2",
                    "--num-inference-steps", "3"],
    "digits-t2i.yaml": ["--max-steps", "3", "--saliency-passes", "1", "--num-images-per-prompt", "2"],
    "digits-samples.yaml": ["--max-steps", "3", "--saliency-passes", "1"],
    "digits-retrain.yaml": ["--max-steps", "3"],
}
SHRUNK_LISTS = {"--refine-steps": "[1, 1, 1]"}  # list flags append when repeated, so their value is replaced
NOT_RUN_HERE = {"make test"}
ACCELERATE_PRESETS = ("single-gpu.yaml", "bf16.yaml", "multi-gpu.yaml")  # every file in configs/accelerate


def readme_commands() -> list[str]:
    """Shell commands of the README's bash blocks, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def added_flags(tokens: list[str], replicas) -> list[str]:
    """Model paths and sizes for one erasekit command line (tokens after the program name)."""
    command = tokens[0]
    config = Path(tokens[tokens.index("--config") + 1]).name if "--config" in tokens else None
    if command == "demo":
        return SIZES["digits.yaml"]
    if command == "train-base":
        return ["--max-steps", "2", "--select-every", "1", "--select-samples-per-class", "2",
                "--classifier-epochs", "1"]
    if command == "erase" and config in RECIPE_REPLICA:
        return ["--pretrained-model-name-or-path", str(replicas(RECIPE_REPLICA[config])), *SD_SIZES]
    if command == "erase":
        return SIZES[config] + (["--refine-draws", "2"] if "--refine" in tokens else [])
    if command == "eval" and "--suite" in tokens and "digits.yaml" not in tokens[tokens.index("--suite") + 1]:
        return ["--num-inference-steps", "2", "--resolution", "32"] if "nudity" in " ".join(tokens) else ["--num-inference-steps", "2"]
    if command in ("eval", "grid"):
        return ["--samples-per-class", "2", "--num-inference-steps", "3", "--columns", "2"][: 4 if command == "eval"
                                                                                             else 6]
    return []


def _with_replicas(tokens: list[str], replicas) -> list[str]:
    return [str(replicas(HUB_IDS[t])) if t in HUB_IDS else t for t in tokens]


def _interrupt_after_first_checkpoint(monkeypatch):
    """The first run of the resume example stops right after its first checkpoint, as a killed job would."""
    from erasekit.erase.trainer import EraseTrainer

    save = EraseTrainer._save_checkpoint

    def save_then_stop(self):
        save(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(EraseTrainer, "_save_checkpoint", save_then_stop)


def run_erasekit(tokens, replicas, monkeypatch) -> None:
    argv = _with_replicas(tokens, replicas)
    argv = [SHRUNK_LISTS.get(argv[i - 1], t) if i else t for i, t in enumerate(argv)]
    argv += added_flags(argv, replicas)
    if "--resume-from-checkpoint" in argv:
        first = [t for i, t in enumerate(argv) if t != "--resume-from-checkpoint" and argv[i - 1] != "--resume-from-checkpoint"]
        with monkeypatch.context() as m:
            _interrupt_after_first_checkpoint(m)
            assert main([*first, "--max-steps", "60"]) == 130
        argv += ["--max-steps", "60"]
    if argv[0] == "push":
        uploaded = fake_hub(monkeypatch)
        assert main(argv) == 0
        assert "mask.safetensors" not in uploaded["files"] and "erasure_delta.safetensors" in uploaded["files"]
        return
    assert main(argv) == 0, " ".join(argv)


def fake_hub(monkeypatch) -> dict:
    """A stand-in for the Hub: records what `push` would upload (no network here)."""
    import huggingface_hub

    uploaded: dict = {}

    class FakeApi:
        def __init__(self, token):
            uploaded["token"] = token

        def create_repo(self, repo_id, **kwargs):
            uploaded["repo"] = (repo_id, kwargs)

        def upload_folder(self, folder_path, repo_id, allow_patterns, commit_message):
            uploaded["files"] = list(allow_patterns)
            return type("Info", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/0"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test_token")
    return uploaded


def run_accelerate(tokens, replicas, cwd) -> None:
    program = tokens.index("-m") + 2  # accelerate launch [launch flags] -m erasekit.cli ARGS
    args = _with_replicas(tokens[program:], replicas)
    args += added_flags(args, replicas)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *tokens[2:program], *args]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd), "ERASEKIT_CACHE": str(cwd / "cache")}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def python_block() -> str:
    return re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)


@pytest.mark.slow  # about 4 minutes on 2 cores: `make test-all` runs it
def test_every_readme_command_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ERASEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(membership, "MIA_DRAWS", 2)  # a size: noise draws of the membership test
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "i2p_benchmark.csv").write_text("prompt,evaluation_seed,evaluation_guidance,categories\n"
                                                '"a nude person, oil painting",1,7.5,sexual\n')
    built: dict = {}

    def replicas(kind):
        if kind not in built:
            built[kind] = build_replica(kind, tmp_path / "replicas" / kind)
        return built[kind]

    commands = readme_commands()
    assert {"make demo", "make test"} <= set(commands)
    launched = {Path(shlex.split(c)[shlex.split(c).index("--config_file") + 1]).name for c in commands
                if "--config_file" in c}
    assert launched == set(ACCELERATE_PRESETS) == {p.name for p in (ROOT / "configs" / "accelerate").iterdir()}
    for command in commands:
        tokens = shlex.split(command)
        if command in NOT_RUN_HERE:
            continue
        if tokens[:2] == ["make", "demo"]:
            run_erasekit(["demo"], replicas, monkeypatch)
        elif tokens[0] == ".venv/bin/erasekit":
            run_erasekit(tokens[1:], replicas, monkeypatch)
        elif tokens[0] == ".venv/bin/accelerate":
            run_accelerate(tokens, replicas, tmp_path)
        else:
            raise AssertionError(f"README command with no runner in this test: {command}")
    assert json.loads((tmp_path / "outputs" / "no-three" / "erasure.json").read_text())["concept"]["forget_classes"] == [3]
    assert (tmp_path / "outputs" / "eval-nudity" / "report.md").is_file()
    assert (tmp_path / "outputs" / "eval-sdxl" / "report.md").is_file()  # the erased SDXL is measured as written
    assert (tmp_path / "outputs" / "no-five" / "unet").is_dir()  # the resumed run finished
    for name in ("digits-samples", "retrain-samples"):  # the same images forgotten, the membership test reported
        record = json.loads((tmp_path / "outputs" / name / "erasure.json").read_text())
        assert len(record["concept"]["forget_index"]) == 144 and "mia_auc" in record["metrics"]["after"]


def test_readme_python_quickstart_runs(tmp_path, monkeypatch):
    import erasekit

    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    erase, evaluate = erasekit.erase, erasekit.evaluate
    sizes = dict(max_steps=3, saliency_passes=1, samples_per_class=2, num_inference_steps=3)
    monkeypatch.setattr(erasekit, "erase", lambda *a, **k: erase(*a, **{**k, **sizes}))
    monkeypatch.setattr(erasekit, "evaluate", lambda *a, **k: evaluate(*a, **{**k, "samples_per_class": 2,
                                                                               "num_inference_steps": 3}))
    namespace: dict = {}
    exec(compile(python_block(), "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert len(namespace["images"]) == 3 and namespace["report"].after["UA"] is not None
