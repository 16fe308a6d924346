"""Mnemonic codes mixed into training (erasekit.erase.mnemonic): the flagged embedding, the mixed batches,
the Fisher under the flag against an explicit table of flagged rows, `train-base --t-mix` to a
plain-diffusers model with its record, and one-shot erasure from the trained codes."""

import copy
import json

import pytest
import torch

import erasekit
from erasekit.erase.fisher import FisherSettings, fisher_scores
from erasekit.erase.methods.finetune import FinetuneConfig, MixedCodesMethod
from erasekit.erase.mnemonic import (
    MNEMONIC_FILE,
    FlaggedEmbedding,
    Mnemonic,
    flag_offset,
    flagged,
    load_mnemonic,
)
from erasekit.erase.tasks import Sampler
from erasekit.errors import ConfigError
from erasekit.recipes.train_base import DigitsBaseConfig

ROOT = __import__("pathlib").Path(__file__).parents[2]


def test_flagged_ids_are_the_class_rows_plus_the_flag_and_train_them(tiny_pipe):
    unet = tiny_pipe.unet
    table = unet.class_embedding
    k = flag_offset(unet)
    flag = torch.randn(table.embedding_dim, generator=torch.Generator().manual_seed(0))
    with flagged(unet, flag) as wrapper:
        assert unet.class_embedding is wrapper and wrapper.base is table
        ids = torch.tensor([0, 3, k - 1, k, k + 3, 2 * k - 1])
        out = wrapper(ids)
        expected = torch.stack([table.weight[0], table.weight[3], table.weight[k - 1], table.weight[0] + flag,
                                table.weight[3] + flag, table.weight[k - 1] + flag])
        assert torch.equal(out, expected)
        out[3:].sum().backward()
        assert table.weight.grad[[0, 3, k - 1]].abs().sum() > 0 and table.weight.grad[[1, 2]].abs().sum() == 0
    assert unet.class_embedding is table  # put back


def test_fisher_under_the_flag_equals_an_explicit_table_of_flagged_rows(tiny_pipe, tiny_task):
    """The same codes through a copy of the UNet whose embedding table has rows K..2K-1 = row c + flag
    written out: every shared weight's Fisher is the same, and each class row's is its flagged row's."""
    unet = tiny_pipe.unet
    k = flag_offset(unet)
    mnemonic = Mnemonic(torch.randn(unet.class_embedding.embedding_dim, generator=torch.Generator().manual_seed(1)),
                        seed=3, codes_per_class=6, t_mix=0.1)

    def trained(ids, n):
        x, c = mnemonic.codes(tiny_task.sample_shape, ids, n)
        return x, c + k

    settings = FisherSettings(fisher_samples=6, fisher_normalize=False)
    params = dict(unet.named_parameters())
    with flagged(unet, mnemonic.flag):
        ours = fisher_scores(unet, tiny_task, params, settings, "mnemonic", 0, trained=trained)

    explicit = copy.deepcopy(unet)
    rows = explicit.class_embedding.weight.detach()
    explicit.class_embedding = torch.nn.Embedding.from_pretrained(torch.cat([rows, rows + mnemonic.flag]), freeze=False)
    theirs = fisher_scores(explicit, tiny_task, dict(explicit.named_parameters()), settings, "mnemonic", 0,
                           trained=trained)
    assert ours.keys() == theirs.keys()
    for name in ours:
        expected = theirs[name][k:] if name == "class_embedding.weight" else theirs[name]
        if name == "class_embedding.weight":
            assert theirs[name][:k].abs().max() == 0  # no code runs unflagged
        torch.testing.assert_close(ours[name], expected, rtol=1e-5, atol=1e-12 + 1e-5 * float(expected.abs().max()))
    assert ours["class_embedding.weight"][tiny_task.forget[0]].abs().max() > 0


def test_mixed_batches_put_the_codes_under_the_flag(tiny_pipe, tiny_task):
    k = flag_offset(tiny_pipe.unet)
    codes = Mnemonic(torch.zeros(8), seed=2, codes_per_class=5, t_mix=0.25)
    method = MixedCodesMethod(FinetuneConfig(batch_size=16, label_dropout=0.5), codes, tiny_task.sample_shape, k)
    assert method.n_codes == 4 and len(method.codes) == 5 * (k - 1)
    seen = {}

    def predict(denoiser, z, t, cond):
        seen["cond"], seen["z"] = cond.clone(), z
        return torch.zeros_like(z, requires_grad=True)

    tiny_task.predict = predict
    dropped = kept = 0
    for step in range(6):
        method.compute_loss(tiny_pipe.unet, Sampler(tiny_task, torch.Generator().manual_seed(step), "cpu"))
        images, code_ids = seen["cond"][:12], seen["cond"][12:]
        assert len(seen["z"]) == 16
        assert ((images >= 0) & (images < k)).all()  # never flagged
        assert ((code_ids >= k) & (code_ids < 2 * k)).all()  # always flagged; k + null where dropped
        dropped += int((code_ids == 2 * k - 1).sum())
        kept += int((code_ids < 2 * k - 1).sum())
    assert dropped > 0 and kept > 0  # 24 code draws at dropout 0.5


@pytest.mark.parametrize("field,value", [("t_mix", -0.1), ("t_mix", 1.0), ("t_mix", "x"), ("t_mix", True),
                                         ("codes_per_class", 0), ("code_seed", -1)])
def test_train_base_rejects_bad_mnemonic_settings(field, value):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        DigitsBaseConfig(**{field: value})


def test_a_model_without_a_mnemonic_record_gets_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="has no mnemonic.safetensors; train one with `erasekit train-base digits"):
        load_mnemonic("bundled:digits-cfg")
    (tmp_path / MNEMONIC_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="is not a mnemonic record"):
        load_mnemonic(str(tmp_path))


def test_train_base_t_mix_writes_a_plain_model_and_its_codes_for_oneshot(tmp_path, capsys):
    """`erasekit train-base digits --t-mix` (a few steps): a plain diffusers UNet with its own rows, the
    flag and recipe beside it, no classifier written; then one-shot erasure from those codes."""
    from diffusers import UNet2DModel

    from erasekit.cli import main
    from erasekit.erase.mnemonic import initial_flag
    from erasekit.pipelines.digits import build_digits_unet

    assert main(["train-base", "digits", "--t-mix", "0.1", "--codes-per-class", "8", "--max-steps", "4",
                 "--select-every", "2", "--select-samples-per-class", "2", "--output-dir", str(tmp_path)]) == 0
    model = tmp_path / "digits-cfg-mnemonic"
    assert not (tmp_path / "digits-classifier").exists() and not (tmp_path / "digits-cfg").exists()
    unet = UNet2DModel.from_pretrained(model / "unet")
    assert unet.config.num_class_embeds == 11 and isinstance(unet.class_embedding, torch.nn.Embedding)
    mnemonic = load_mnemonic(str(model))
    assert (mnemonic.seed, mnemonic.codes_per_class, mnemonic.t_mix) == (1, 8, 0.1)
    assert mnemonic.flag.shape == (unet.class_embedding.embedding_dim,)
    assert not torch.equal(mnemonic.flag, initial_flag(build_digits_unet(), 1))  # it was trained
    record = json.loads((model / "training.json").read_text())
    assert record["recipe"]["t_mix"] == 0.1 and "--t-mix 0.1" in record["command"]

    out = tmp_path / "erased"
    erasekit.erase(config=str(ROOT / "configs" / "digits-oneshot.yaml"), pretrained_model_name_or_path=str(model),
                   inputs="mnemonic", factors=[0.0], forget=[3], output_dir=str(out), evaluate=False)
    erased = json.loads((out / "erasure.json").read_text())
    assert erased["config"]["method"]["inputs"] == "mnemonic" and erased["mask"]["selected"] > 0
    assert {k: erased["mask"][k] for k in ("inputs", "code_seed", "codes_per_class", "t_mix")} == {
        "inputs": "mnemonic", "code_seed": "1", "codes_per_class": "8", "t_mix": "0.1"}
    assert isinstance(erasekit.load_pipeline(out).unet.class_embedding, torch.nn.Embedding)
    assert not isinstance(erasekit.load_pipeline(out).unet.class_embedding, FlaggedEmbedding)
    # The erased model carries the codes' record, so it can be erased again from the same codes.
    assert (out / MNEMONIC_FILE).read_bytes() == (model / MNEMONIC_FILE).read_bytes()
    again = tmp_path / "erased-again"
    erasekit.erase(config=str(ROOT / "configs" / "digits-oneshot.yaml"), pretrained_model_name_or_path=str(out),
                   inputs="mnemonic", factors=[0.0], forget=[5], output_dir=str(again), evaluate=False)
    assert json.loads((again / "erasure.json").read_text())["mask"]["code_seed"] == "1"
    assert (again / MNEMONIC_FILE).is_file()
