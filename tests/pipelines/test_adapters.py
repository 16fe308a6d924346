"""The adapter registry, flow-matching noising, and the method protocol's teacher and training-free edit."""

import json
from dataclasses import dataclass

import pytest
import torch

from erasekit.errors import ConfigError
from erasekit.pipelines.adapters import adapter_for
from tiny import tiny_class_conditional_pipeline, tiny_flux_pipeline, tiny_sd3_pipeline


def test_adapter_found_through_the_class_hierarchy_and_unknown_pipelines_refused():
    pipe = tiny_class_conditional_pipeline()
    subclass = type("MyPipeline", (type(pipe),), {})
    sub = subclass(unet=pipe.unet, scheduler=pipe.scheduler)
    assert adapter_for(sub).family == "class-conditional" and adapter_for(sub).denoiser is pipe.unet

    class NotADiffusionPipeline:
        pass

    with pytest.raises(ConfigError, match="no adapter for NotADiffusionPipeline.*FluxPipeline"):
        adapter_for(NotADiffusionPipeline())


@pytest.mark.parametrize("build", [tiny_sd3_pipeline, tiny_flux_pipeline], ids=["sd3", "flux"])
def test_flow_matching_noise_and_target(build):
    adapter = adapter_for(build())
    scheduler = adapter.training_scheduler()
    x0 = torch.randn(64, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    noisy = adapter.noise_and_target(scheduler, x0, torch.Generator().manual_seed(1))
    sigma = (noisy.t / scheduler.config.num_train_timesteps).view(-1, 1, 1, 1)
    noise = noisy.target + x0  # target = noise - x0
    assert torch.allclose(noisy.z_t, (1 - sigma) * x0 + sigma * noise, atol=1e-5)
    nearest = (sigma.flatten()[:, None] - scheduler.sigmas[None]).abs().min(1).values
    assert (nearest < 1e-6).all() and sigma.min() > 0 and sigma.max() <= 1  # drawn from the schedule's sigmas
    assert noise.std() == pytest.approx(1.0, abs=0.05)  # the noise is standard normal
    again = adapter.noise_and_target(scheduler, x0, torch.Generator().manual_seed(1))
    assert torch.equal(again.z_t, noisy.z_t)  # seeded


def test_flux_prediction_keeps_latents_unpacked():
    from erasekit.pipelines.adapters.flux import pack, unpack

    x = torch.randn(2, 16, 8, 6)
    assert pack(x).shape == (2, 12, 64) and torch.equal(unpack(pack(x), 8, 6), x)
    adapter = adapter_for(tiny_flux_pipeline())
    cond = adapter.encode_prompts(["", "a church"], "cpu", None, 32)
    out = adapter.predict(adapter.denoiser, torch.randn(2, 16, 8, 8), torch.tensor([500.0, 20.0]), cond)
    assert out.shape == (2, 16, 8, 8) and torch.isfinite(out).all()


@dataclass
class ShrinkConfig:
    factor: float = 0.5


class ShrinkToTeacher:
    """A toy training-free method: moves the class embedding halfway to a (frozen) teacher's zeros."""

    mask = None
    needs_teacher = True

    def __init__(self, config):
        self.config, self.seen = config, {}

    def prepare(self, denoiser, task, generator, shard, teacher=None):
        ShrinkToTeacher.seen = {"teacher_frozen": all(not p.requires_grad for p in teacher.parameters()),
                                "teacher_equals_base": all(torch.equal(a, b) for a, b in
                                                           zip(teacher.state_dict().values(),
                                                               denoiser.state_dict().values())),
                                "teacher_is_copy": teacher is not denoiser}

    def trainable_parameters(self, denoiser, task):
        return {}

    def edit(self, denoiser, task):
        with torch.no_grad():
            denoiser.class_embedding.weight.mul_(self.config.factor)
        return {"edited": 1}


def test_training_free_method_with_a_teacher_runs_through_erase(tmp_path):
    import erasekit
    from erasekit.erase.methods import METHODS, register_method

    register_method("shrink-test", ShrinkConfig, ShrinkToTeacher)
    try:
        out = tmp_path / "out"
        erasekit.erase(method="shrink-test", forget=[1], output_dir=str(out), evaluate=False, factor=0.25)
    finally:
        METHODS.pop("shrink-test")
    assert ShrinkToTeacher.seen == {"teacher_frozen": True, "teacher_equals_base": True, "teacher_is_copy": True}

    base = adapter_for(erasekit.load_pipeline("bundled:digits-cfg")).denoiser
    erased = adapter_for(erasekit.load_pipeline(str(out))).denoiser
    assert torch.equal(erased.class_embedding.weight, base.class_embedding.weight * 0.25)
    assert torch.equal(erased.conv_in.weight, base.conv_in.weight)
    assert json.loads((out / "erasure.json").read_text())["metrics"]["train"] == {"step": 0, "edited": 1}


def test_register_method_refuses_a_class_with_neither_loss_nor_edit():
    from erasekit.erase.methods import METHODS, register_method

    class Nothing:
        pass

    with pytest.raises(TypeError, match="neither compute_loss"):
        register_method("nothing-test", ShrinkConfig, Nothing)
    assert "nothing-test" not in METHODS


@pytest.mark.parametrize("build", [tiny_class_conditional_pipeline, tiny_sd3_pipeline, tiny_flux_pipeline],
                         ids=["ddpm", "sd3", "flux"])
def test_a_noise_level_counts_from_the_clean_end_and_the_scales_rebuild_the_noising(build):
    """`levels` near 0 are nearly clean on every family (the flow sigmas run from pure noise down), the
    adapter reads each sample's level back, and `z_t = a x0 + s noise` with the target `target_of` gives."""
    adapter = adapter_for(build())
    scheduler = adapter.training_scheduler()
    x0 = torch.randn(6, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    levels = torch.tensor([0.02, 0.1, 0.3, 0.5, 0.7, 0.95])
    noisy = adapter.noise_and_target(scheduler, x0, torch.Generator().manual_seed(1), levels)
    a, s = adapter.noise_scales(scheduler, noisy.t)
    assert (s[1:] > s[:-1]).all() and s[0] < 0.3 and s[-1] > 0.9  # noisier with the level
    read = adapter.noise_level(scheduler, noisy.t)
    assert torch.allclose(read, levels.double(), atol=2e-3)
    shape = (-1, 1, 1, 1)
    noise = (noisy.z_t.double() - a.view(shape) * x0.double()) / s.view(shape)
    assert torch.allclose(adapter.target_of(scheduler, x0, noise.float(), noisy.t), noisy.target, atol=1e-4)
