
import numpy as np
import pytest
from PIL import Image

from erasekit.errors import ModelLoadError
from erasekit.eval.nudenet import NudeNetConfig, nudity_metrics, parse_detections, to_bgr_uint8


@pytest.fixture(scope="module")
def nudenet():
    from erasekit.eval.nudenet import NudeNet

    return NudeNet()


def test_nudenet_sees_the_astronauts_face_and_nothing_in_black(nudenet):
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    (found,), (blank,) = nudenet.detect([astronaut]), nudenet.detect([Image.new("RGB", (256, 256))])
    faces = [d for d in found if d["class"] == "FACE_FEMALE"]
    assert faces and faces[0]["score"] > 0.5
    assert blank == []


def test_images_reach_nudenet_as_bgr_uint8():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # red
    bgr = to_bgr_uint8(Image.fromarray(rgb))
    assert bgr.shape == (4, 4, 3) and bgr[0, 0].tolist() == [0, 0, 255]
    assert to_bgr_uint8(np.ones((4, 4))).shape == (4, 4, 3)  # grey becomes 3 channels
    assert to_bgr_uint8(np.ones((4, 4, 3), np.float32)).max() == 255


def test_label_parsing_and_counting():
    config = NudeNetConfig(threshold=0.6)
    rows = [
        parse_detections([{"class": "FEMALE_BREAST_EXPOSED", "score": 0.9}, {"class": "FACE_FEMALE", "score": 0.9},
                          {"class": "FEET_EXPOSED", "score": 0.7}], config),
        parse_detections([{"class": "BUTTOCKS_EXPOSED", "score": 0.59}, {"class": "ARMPITS_EXPOSED", "score": 0.8}],
                         config),
        parse_detections([], config),
        parse_detections([{"class": "MALE_GENITALIA_EXPOSED", "score": 0.61},
                          {"class": "MALE_GENITALIA_EXPOSED", "score": 0.8}], config),
    ]
    assert rows[0] == {"labels": ["FEET_EXPOSED", "FEMALE_BREAST_EXPOSED"], "nude": True}
    assert rows[1] == {"labels": ["ARMPITS_EXPOSED"], "nude": False}  # below threshold, and armpits alone
    metrics = nudity_metrics(rows, config)
    assert metrics["nude_images"] == 2 and metrics["nudity_rate"] == 0.5
    assert metrics["label_counts"]["MALE_GENITALIA_EXPOSED"] == 1  # images, not boxes
    assert metrics["exposed_total"] == 4 and metrics["label_counts"]["BUTTOCKS_EXPOSED"] == 0
    low, high = metrics["nudity_rate_ci95"]
    assert low < 0.5 < high


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_name):
    from erasekit.eval.clip import ClipScorer

    return ClipScorer(tiny_clip_name, pretrained=None)


def test_clip_score_and_zero_shot_on_a_tiny_random_model(tiny_clip):
    from erasekit.eval.clip import concept_accuracy

    images = [Image.new("RGB", (40, 40), c) for c in ("red", "blue", "white")]
    scores = tiny_clip.clip_score(images, ["a red square", "a blue square", "a white square"])
    assert scores.shape == (3,) and (scores >= 0).all() and (scores <= 100).all()
    picks = tiny_clip.zero_shot(images, "a church", ["a house", "a tree"])
    assert picks.shape == (3,) and set(picks.tolist()) <= {0, 1, 2}
    assert concept_accuracy(picks) == float((picks == 0).float().mean())
    feats = tiny_clip.image_features(images)
    assert np.allclose(feats.norm(dim=-1).numpy(), 1, atol=1e-5)


def test_clip_without_local_weights_says_how_to_provide_them(monkeypatch):
    import huggingface_hub.constants

    from erasekit.eval.clip import ClipScorer

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="pass --clip-pretrained /path/to/open_clip_model.safetensors"):
        ClipScorer("ViT-B-32", pretrained="laion2b_s34b_b79k")
    with pytest.raises(ModelLoadError, match="could not load CLIP model"):
        ClipScorer("ViT-B-32", pretrained="/nonexistent/weights.safetensors")


def test_torchvision_classifier_from_local_weights_maps_to_suite_labels(tmp_path):
    import torch
    import torchvision
    from safetensors.torch import save_file

    from erasekit.eval.measure import Judge
    from erasekit.eval.suite import EvalSuite

    weights = tmp_path / "resnet18.safetensors"
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    save_file(state, weights)
    suite = EvalSuite(metrics=["classifier"], classifier="torchvision:resnet18", classifier_weights=str(weights),
                      class_ids=[0, 217, 482, 491, 497])
    judge = Judge(suite)
    torch.save(state, tmp_path / "resnet18.pth")  # torchvision's own format loads when pickles are allowed
    pickled = Judge(EvalSuite(metrics=["classifier"], classifier="torchvision:resnet18", allow_pickle=True,
                              classifier_weights=str(tmp_path / "resnet18.pth")))
    assert all(torch.equal(a, b) for a, b in zip(pickled.model.state_dict().values(), judge.model.state_dict().values()))
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "green")]
    preds, logits = judge.predict(images)
    assert logits.shape == (2, 1000)
    expected = logits[:, suite.class_ids].argmax(-1).tolist()  # labels index into class_ids
    assert preds == expected and all(0 <= p < 5 for p in preds)
    with pytest.raises(ModelLoadError, match="needs local weights; pass --classifier-weights"):
        Judge(EvalSuite(metrics=["classifier"], classifier="torchvision:resnet50"))
