"""Pickle-based weights never load without `allow_pickle`: a pickle whose payload would write a file
is refused before it is opened, and the file never appears. No process-wide environment changes."""

import os
import pickle
import shutil
from pathlib import Path

import pytest

from erasekit.errors import ModelLoadError
from erasekit.pipelines.loading import load_pipeline


class _Payload:
    """Unpickling this runs `open(path, "w")`: the marker file is the proof that the pickle was loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_pickle(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Payload(marker)}, f)


def test_a_pickle_ckpt_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "model.ckpt"
    _evil_pickle(ckpt, marker)
    with pytest.raises(ModelLoadError, match="pickle-based checkpoint; a pickle can run any code.*--allow-pickle"):
        load_pipeline(ckpt)
    assert not marker.exists()


def test_a_pipeline_directory_with_pickled_weights_is_refused(tmp_path):
    import erasekit

    marker = tmp_path / "pwned"
    folder = tmp_path / "pipe"
    shutil.copytree(erasekit.bundled_path("digits-cfg"), folder)
    for weights in (folder / "unet").glob("*.safetensors"):
        weights.unlink()
    _evil_pickle(folder / "unet" / "diffusion_pytorch_model.bin", marker)
    with pytest.raises(ModelLoadError, match=r"pickle-based weights \(unet/diffusion_pytorch_model.bin\)"):
        load_pipeline(folder)
    with pytest.raises(ModelLoadError, match="pickle-based weights"):
        erasekit.erase(pretrained_model_name_or_path=str(folder), forget=[1], output_dir=str(tmp_path / "out"),
                       evaluate=False)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_pickled_classifier_and_clip_weights_are_refused(tmp_path):
    from erasekit.eval.clip import ClipScorer
    from erasekit.eval.measure import Judge
    from erasekit.eval.suite import EvalSuite

    marker = tmp_path / "pwned"
    weights = tmp_path / "resnet.pth"
    _evil_pickle(weights, marker)
    with pytest.raises(ModelLoadError, match="are a pickle"):
        Judge(EvalSuite(classifier="torchvision:resnet18", classifier_weights=str(weights)))
    with pytest.raises(ModelLoadError, match="are a pickle"):
        ClipScorer("ViT-B-32", pretrained=str(weights))
    assert not marker.exists()


def test_a_clip_tag_does_not_change_the_process_environment(tiny_clip_name):
    from erasekit.eval.clip import ClipScorer

    before = dict(os.environ)
    with pytest.raises(ModelLoadError):
        ClipScorer(tiny_clip_name, pretrained="laion2b_s34b_b79k")
    assert dict(os.environ) == before


@pytest.mark.parametrize("name", ["digits-cfg", "digits-classifier", "digits-t2i"])
def test_bundled_models_are_safetensors_and_json_only(name, assert_no_pickles):
    from erasekit.pipelines.loading import BUNDLED_DIR

    assert_no_pickles(Path(BUNDLED_DIR) / name)
