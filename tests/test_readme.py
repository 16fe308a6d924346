"""Every command shown in README.md and docs/ runs, in reading order, as a user would type it; so does
every Python block.

Commands run from a fresh working directory that holds `configs/`. Only model paths (Hub ids become
local replicas of the same checkpoints) and sizes (steps, images, samples) are added; a later flag
overrides an earlier one. `make test` is the command CI runs this suite with, so it is not run here.
"""

import json
import re
import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from erasekit.cli import main
from erasekit.erase import membership
from erasekit.erase.methods import METHODS, get_method
from erasekit.recipe import ROLES
from replicas import build_replica

ROOT = Path(__file__).parents[1]
# Reading order: a later page's commands use the outputs of earlier ones (the SD eval, the erased SD model).
PAGES = ["README.md", "docs/text-to-image.md", "docs/methods.md", "docs/memorization.md", "docs/evaluation.md",
         "docs/attacks.md", "docs/shipping.md", "docs/bundled-models.md", "docs/architecture.md",
         "docs/troubleshooting.md"]
HUB_IDS = {"CompVis/stable-diffusion-v1-4": "sd14", "stabilityai/stable-diffusion-xl-base-1.0": "sdxl"}
RECIPE_REPLICA = {"sd-nudity.yaml": "sd14", "sd-nudity-robust.yaml": "sd14", "sd-object.yaml": "sd15", "sd21-nudity.yaml": "sd21",
                  "sdxl-nudity.yaml": "sdxl", "sd3-nudity.yaml": "sd3", "flux-nudity.yaml": "flux"}
SD_SIZES = ["--num-images-per-prompt", "2", "--resolution", "32", "--generation-steps", "2", "--batch-size", "2",
            "--saliency-batch-size", "2", "--max-steps", "2"]
SIZES = {
    "digits.yaml": ["--max-steps", "3", "--saliency-passes", "1", "--samples-per-class", "2",
                    "--num-inference-steps", "3"],
    "digits-robust.yaml": ["--max-steps", "3", "--saliency-passes", "1", "--samples-per-class", "2",
                           "--num-inference-steps", "3"],
    "digits-t2i.yaml": ["--max-steps", "3", "--saliency-passes", "1", "--num-images-per-prompt", "2"],
    "digits-samples.yaml": ["--max-steps", "3", "--saliency-passes", "1"],
    "digits-retrain.yaml": ["--max-steps", "3"],
}
SHRUNK_LISTS = {"--refine-steps": "[1, 1, 1]"}  # list flags append when repeated, so their value is replaced
NOT_RUN_HERE = {"make test"}
ACCELERATE_PRESETS = ("single-gpu.yaml", "bf16.yaml", "multi-gpu.yaml")  # every file in configs/accelerate


def test_every_page_of_the_docs_is_followed():
    assert set(PAGES) == {"README.md", *(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))}


def _blocks(language: str) -> list[str]:
    return [block for page in PAGES
            for block in re.findall(rf"```{language}\n(.*?)```", (ROOT / page).read_text(), flags=re.S)]


def readme_commands() -> list[str]:
    """Shell commands of the bash blocks of the README and docs/, comments dropped."""
    blocks = _blocks("bash")
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
        sizes = ["--max-steps", "2", "--select-every", "1", "--select-samples-per-class", "2"]
        return sizes + (["--vae-steps", "2"] if tokens[1] == "digits-t2i" else ["--classifier-epochs", "1"])
    if command == "erase" and config in RECIPE_REPLICA:
        return ["--pretrained-model-name-or-path", str(replicas(RECIPE_REPLICA[config])), *SD_SIZES]
    if command == "erase":
        return _for_method(SIZES[config] + (["--refine-draws", "2"] if "--refine" in tokens else []), tokens)
    if command == "eval" and "--suite" in tokens and "digits.yaml" not in tokens[tokens.index("--suite") + 1]:
        return ["--num-inference-steps", "2", "--resolution", "32"] if "nudity" in " ".join(tokens) else ["--num-inference-steps", "2"]
    if command == "attack":
        return ["--instances", "1", "--eval-images", "1", "--num-inference-steps", "3", "--images-per-instance", "2",
                *[flag for name, steps in (("cce", "2"), ("uda", "2"), ("soft", "2")) if name in tokens
                  for flag in (f"--{name}-steps", steps)],
                *(["--ringabell-generations", "1", "--ringabell-population", "4"] if "ringabell" in tokens else []),
                *(["--trajectory-steps", "4"] if "trajectory" in tokens else []),
                *(["--seed-search-budget", "2"] if "seed_search" in tokens else [])]
    if command in ("eval", "grid"):
        return ["--samples-per-class", "2", "--num-inference-steps", "3", "--columns", "2"][: 4 if command == "eval"
                                                                                             else 6]
    return []


def _for_method(flags: list[str], tokens: list[str]) -> list[str]:
    """The size flags the command's method takes (`--saliency-passes` is SalUn's, not ESD's)."""
    if "--method" not in tokens:
        return flags
    own = {f.name for cls in (*ROLES.values(), get_method(tokens[tokens.index("--method") + 1]).config)
           for f in fields(cls)}
    others = {f.name for spec in METHODS.values() for f in fields(spec.config)} - own
    pairs = [flags[i:i + 2] for i in range(0, len(flags), 2)]
    return [t for key, value in pairs if key[2:].replace("-", "_") not in others for t in (key, value)]


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


@pytest.fixture
def small_erase(tmp_path, monkeypatch):
    """`erasekit.erase` and `evaluate` at test sizes, in a working directory that holds `configs/`."""
    import erasekit

    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    erase, evaluate = erasekit.erase, erasekit.evaluate
    sizes = dict(max_steps=3, saliency_passes=1, samples_per_class=2, num_inference_steps=3)
    monkeypatch.setattr(erasekit, "erase", lambda *a, **k: erase(*a, **{**k, **sizes}))
    monkeypatch.setattr(erasekit, "evaluate", lambda *a, **k: evaluate(*a, **{**k, "samples_per_class": 2,
                                                                               "num_inference_steps": 3}))
    registered = dict(METHODS)
    yield
    METHODS.clear()
    METHODS.update(registered)  # a page's example method is not left registered


def test_readme_python_quickstart_runs(small_erase):
    namespace: dict = {}
    exec(compile(_blocks("python")[0], "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert len(namespace["images"]) == 3 and namespace["report"].after["UA"] is not None


def test_every_python_block_of_the_docs_runs(small_erase):
    blocks = _blocks("python")[1:]
    assert len(blocks) >= 2  # the config objects (methods.md) and a new method (architecture.md)
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "docs", "exec"), namespace)  # noqa: S102 - the docs' own code
        if "report" in namespace:  # docs/attacks.md: an attack report
            assert namespace["report"]["attacks"] and all(0 <= r["asr"] <= 1 for r in namespace["report"]["attacks"])
            continue
        assert 0 <= namespace["result"].metrics["after"]["UA"] <= 1
    record = json.loads(Path("outputs/no-three-to-null/erasure.json").read_text())
    assert record["method"] == "to-null" and record["config"]["method"]["pull"] == 2.0
    assert record["method_description"] == "Forget predictions pulled to the unconditional prediction (an example)."
