import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from erasekit.errors import ModelLoadError
from erasekit.pipelines import ClassConditionalPipeline, bundled_path, load_pipeline
from erasekit.pipelines.pipeline_class_conditional import guided_prediction, per_sample_generators


def _images(pipe, labels=(0, 1, 2, 3), seeds=(5, 6, 7, 8), **kwargs):
    return pipe(list(labels), num_inference_steps=4, generator=per_sample_generators(seeds), output_type="np",
                **kwargs).images


def test_save_reload_gives_identical_images(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "p")
    reloaded = load_pipeline(tmp_path / "p")
    assert isinstance(reloaded, ClassConditionalPipeline)
    np.testing.assert_array_equal(_images(tiny_pipe), _images(reloaded))
    direct = ClassConditionalPipeline.from_pretrained(tmp_path / "p")
    np.testing.assert_array_equal(_images(tiny_pipe), _images(direct))


def test_image_depends_on_its_seed_not_its_batch(tiny_pipe):
    full = _images(tiny_pipe)
    alone = _images(tiny_pipe, labels=(2,), seeds=(7,))
    np.testing.assert_allclose(full[2], alone[0], atol=1e-5)


def test_batched_cfg_equals_two_separate_calls(tiny_pipe):
    unet = tiny_pipe.unet
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor(500)
    labels = torch.tensor([0, 1, 3])
    with torch.no_grad():
        guided = guided_prediction(unet, x, t, labels, 3.0)
        cond = unet(x, t, class_labels=labels).sample
        uncond = unet(x, t, class_labels=torch.full_like(labels, 4)).sample
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scheduler_cls", [DDPMScheduler, DPMSolverMultistepScheduler])
def test_any_diffusers_scheduler(tiny_pipe, scheduler_cls):
    pipe = ClassConditionalPipeline(tiny_pipe.unet, scheduler_cls.from_config(tiny_pipe.scheduler.config))
    images = _images(pipe)
    assert images.shape == (4, 8, 8, 1) and np.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1


def test_output_types(tiny_pipe):
    pil = tiny_pipe([0, 1], num_inference_steps=2, generator=per_sample_generators([0, 1])).images
    assert len(pil) == 2 and pil[0].size == (8, 8)
    pt = tiny_pipe([0], num_inference_steps=2, output_type="pt").images
    assert pt.shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="out of range"):
        tiny_pipe([9], num_inference_steps=2)


def test_callback_on_step_end_sees_every_step(tiny_pipe):
    seen = []

    def callback(pipe, i, t, tensors):
        seen.append(i)
        return tensors

    tiny_pipe([0], num_inference_steps=3, callback_on_step_end=callback)
    assert seen == [0, 1, 2]


def test_load_errors_name_the_path(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pipeline(tmp_path / "missing" / "deeper")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_pipeline(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="unknown bundled model"):
        load_pipeline("bundled:nope")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="could not be fetched from the Hugging Face Hub"):
        load_pipeline("some-org/some-model")


def test_bundled_digits_model_loads():
    pipe = load_pipeline("bundled:digits-cfg")
    assert isinstance(pipe, ClassConditionalPipeline) and pipe.num_classes == 10
    assert (bundled_path("digits-cfg") / "training.json").is_file()
    assert bundled_path("digits-cfg") == bundled_path("bundled:digits-cfg")
