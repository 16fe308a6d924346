import pytest
import torch

from erasekit.erase.tasks import ClassConditionalTask
from erasekit.pipelines.tiny import tiny_class_conditional_pipeline


@pytest.fixture
def tiny_pipe():
    return tiny_class_conditional_pipeline(num_classes=4, sample_size=8)


@pytest.fixture
def tiny_task(tiny_pipe):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, 8, 8, generator=g) * 2 - 1
    labels = torch.arange(40) % 4
    return ClassConditionalTask.for_pipeline(tiny_pipe, images, labels, forget=[1])


@pytest.fixture(scope="session")
def tiny_clip_name(tmp_path_factory):
    """Registers a 16-dimensional open_clip architecture (random weights) and returns its name."""
    import json

    import open_clip

    folder = tmp_path_factory.mktemp("clip")
    (folder / "erasekit-tiny-clip.json").write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(folder)
    return "erasekit-tiny-clip"


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps a process-wide singleton; each test builds its own Accelerator."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
