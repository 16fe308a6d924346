"""Shipping: recipes parse, push stages the right files and fails clearly offline, single files load or fail clearly."""

from pathlib import Path

import pytest

from erasekit.errors import ConfigError, ErasekitError, ModelLoadError
from erasekit.pipelines.hub import push_to_hub, staged_files
from erasekit.pipelines.loading import load_pipeline
from erasekit.recipe import resolve_configs

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_recipe_parses(path):
    cfg = resolve_configs(path, {})
    from erasekit.erase.methods import METHODS

    assert cfg.run.output_dir and isinstance(cfg.method, METHODS[cfg.run.method][0])
    if cfg.concept.forget_prompts:
        cfg.concept.require_prompts()


def test_nudity_recipe_carries_salun_hyperparameters():
    cfg = resolve_configs(Path(CONFIGS[0]).parent / "sd-nudity.yaml", {})
    assert (cfg.method.alpha, cfg.train.learning_rate, cfg.method.ratio, cfg.method.saliency_guidance) == (
        0.1, 1e-5, 0.5, 7.5)
    assert cfg.concept.num_images_per_prompt == 800 and cfg.method.batch_size == 8 and cfg.train.max_steps == 100


def _erased_dir(tmp_path):
    out = tmp_path / "erased"
    for name in ("README.md", "erasure.json", "model_index.json", "erasure_delta.safetensors", "unet/config.json",
                 "logs.jsonl", ".cache/x", "checkpoints/checkpoint-2/model.safetensors", "report/grid.png"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")
    return out


def test_staged_files_keep_the_model_and_drop_training_leftovers(tmp_path):
    files = staged_files(_erased_dir(tmp_path))
    assert files == ["README.md", "erasure.json", "erasure_delta.safetensors", "model_index.json",
                     "report/grid.png", "unet/config.json"]


def test_mask_is_pushed_only_when_asked(tmp_path):
    out = _erased_dir(tmp_path)
    (out / "mask.safetensors").write_text("x")
    assert "mask.safetensors" not in staged_files(out)
    assert "mask.safetensors" in staged_files(out, include_mask=True)


def test_incomplete_directory_is_not_pushed(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model_index.json").write_text("{}")
    with pytest.raises(ConfigError, match="missing README.md, erasure.json"):
        staged_files(tmp_path / "half")


def test_push_without_token_or_network_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub

    out = _erased_dir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ErasekitError, match="no Hugging Face token"):
        push_to_hub(out, "org/name")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ErasekitError, match="could not push to the Hugging Face Hub repo 'org/name'"):
        push_to_hub(out, "org/name", token="hf_fake")


def test_single_file_checkpoint_offline_error_names_the_fix(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import torch
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    path = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, path)
    with pytest.raises(ModelLoadError, match="single-file checkpoint .* pass config="):
        load_pipeline(path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="not a .safetensors or .ckpt"):
        load_pipeline(tmp_path / "notes.txt")


def test_push_uploads_only_allow_listed_files(tmp_path):
    out = _erased_dir(tmp_path)
    for name in ("notes.txt", "../outside.txt", "report/images/model/target/00000.png", "unet/extra.bin",
                 "a/b/c.safetensors", "secrets.env"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")
    (out / "link.safetensors").symlink_to(tmp_path / "outside.txt")
    assert staged_files(out) == ["README.md", "erasure.json", "erasure_delta.safetensors", "model_index.json",
                                 "report/grid.png", "unet/config.json"]


def test_the_token_is_never_printed_logged_or_written(tmp_path, monkeypatch, capsys, caplog):
    """A planted token: erase, push (one failing, one succeeding) and scan every written file and all output."""
    import logging

    import huggingface_hub

    import erasekit
    from erasekit.cli import main

    token = "hf_PLANTEDtoken0123456789abcdef"
    monkeypatch.setenv("HF_TOKEN", token)
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "erased"
    erasekit.erase(forget=[1], output_dir=str(out), max_steps=2, saliency_passes=1, samples_per_class=2,
                   num_inference_steps=2, checkpointing_steps=1)

    class FailingApi:
        def __init__(self, token):
            self.token = token

        def create_repo(self, repo_id, **kwargs):
            raise RuntimeError(f"401 Unauthorized for token {self.token} at https://huggingface.co/{repo_id}")

    monkeypatch.setattr(huggingface_hub, "HfApi", FailingApi)
    assert main(["push", str(out), "--repo-id", "org/name"]) == 2
    uploaded = {}

    class RecordingApi(FailingApi):
        def create_repo(self, repo_id, **kwargs):
            uploaded["repo"] = repo_id

        def upload_folder(self, folder_path, repo_id, allow_patterns, commit_message):
            uploaded["files"] = list(allow_patterns)
            return "https://huggingface.co/org/name/commit/0"

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    assert main(["push", str(out), "--repo-id", "org/name"]) == 0 and uploaded["files"]
    printed = capsys.readouterr()
    texts = [printed.out, printed.err, caplog.text, json_dumps(uploaded)]
    texts += [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file()]
    assert all(token not in text for text in texts), "the token leaked"
    assert "<token>" in printed.err  # the failing push said why, with the token masked


def json_dumps(value) -> str:
    import json

    return json.dumps(value)
