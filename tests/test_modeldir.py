import json

import pytest
import torch

from phenaki_cli.config import TOKENIZER_PRESETS
from phenaki_cli.errors import UserError
from phenaki_cli.modeldir import load_tokenizer, save_model_dir
from phenaki_cli.tokenizer import CViViT


def test_round_trip_keeps_weights(tiny_model_dir):
    m, config_hash = load_tokenizer(tiny_model_dir)
    again, again_hash = load_tokenizer(tiny_model_dir)
    assert config_hash == again_hash and len(config_hash) == 16
    video = torch.rand(1, 5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m.encode(video), again.encode(video))


def test_fp16_storage_loads_back_as_fp32(tmp_path):
    model = CViViT(TOKENIZER_PRESETS["tiny"])
    save_model_dir(tmp_path / "m", {"tokenizer": (TOKENIZER_PRESETS["tiny"], model)}, dtype=torch.float16)
    loaded, _ = load_tokenizer(tmp_path / "m")
    assert loaded.embed_first.weight.dtype == torch.float32
    assert torch.allclose(loaded.embed_first.weight, model.embed_first.weight, atol=1e-3)


def test_grown_table_keeps_its_stored_rows(tmp_path):
    """load_weights(new_rows=...): a codebook grown for a fine-tune keeps the stored codes and the
    module's own rows after them; a table named nowhere must still match exactly."""
    from dataclasses import replace

    from phenaki_cli.modeldir import load_weights

    small = CViViT(TOKENIZER_PRESETS["tiny"])
    save_model_dir(tmp_path / "m", {"tokenizer": (TOKENIZER_PRESETS["tiny"], small)})
    grown = CViViT(replace(TOKENIZER_PRESETS["tiny"], codebook_size=300))
    fresh = grown.quantizer.codebook.detach().clone()
    load_weights(grown, tmp_path / "m" / "tokenizer.safetensors", new_rows=("quantizer.codebook",
                                                                            "quantizer.steps_unused"))
    codes = grown.quantizer.codebook.detach()
    assert torch.equal(codes[:256], small.quantizer.codebook.detach()) and torch.equal(codes[256:], fresh[256:])
    assert torch.equal(grown.embed_first.weight, small.embed_first.weight)
    with pytest.raises(UserError, match="quantizer.codebook has shape"):
        load_weights(CViViT(replace(TOKENIZER_PRESETS["tiny"], codebook_size=300)),
                     tmp_path / "m" / "tokenizer.safetensors")


def copy_dir(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_config_that_does_not_match_weights_names_the_tensor(tiny_model_dir, tmp_path):
    bad = copy_dir(tiny_model_dir, tmp_path / "bad")
    config = json.loads((bad / "config.json").read_text())
    config["tokenizer"]["codebook_size"] = 128
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"quantizer.codebook has shape \(256, 16\) but config.json implies \(128, 16\)"):
        load_tokenizer(bad)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "config.json").unlink(), "config.json: missing"),
    (lambda d: (d / "config.json").write_text("{oops"), "not valid JSON"),
    (lambda d: (d / "config.json").write_text('{"format": "phenaki", "version": 1}'), 'no "tokenizer" section'),
    (lambda d: (d / "tokenizer.safetensors").write_bytes(b"garbage"), "cannot read weights"),
    (lambda d: (d / "tokenizer.safetensors").unlink(), "weights file missing"),
    (lambda d: (d / "config.json").write_text(json.dumps(
        {"format": "phenaki", "version": 1, "tokenizer": {"dimm": 3}})), "unknown field"),
])
def test_corrupt_model_dirs_are_clear_errors(tiny_model_dir, tmp_path, damage, message):
    bad = copy_dir(tiny_model_dir, tmp_path / "bad")
    damage(bad)
    with pytest.raises(UserError, match=message):
        load_tokenizer(bad)


def test_missing_model_dir(tmp_path):
    with pytest.raises(UserError, match="model directory not found"):
        load_tokenizer(tmp_path / "nope")


def test_token_hash_ignores_fields_added_later_at_their_old_meaning(tiny_model_dir, tmp_path):
    """A model directory written before `encoder_window` existed hashes its tokens as it always did
    (old token files still load); a windowed encoder makes other tokens, so its hash differs."""
    from phenaki_cli.config import to_dict, tokens_hash

    old = copy_dir(tiny_model_dir, tmp_path / "old")
    config = json.loads((old / "config.json").read_text())
    del config["tokenizer"]["encoder_window"]
    (old / "config.json").write_text(json.dumps(config))
    model, from_file = load_tokenizer(old)
    assert from_file == load_tokenizer(tiny_model_dir)[1] == tokens_hash(to_dict(model.config))
    windowed = dict(to_dict(model.config), encoder_window=1)
    assert tokens_hash(windowed) != from_file
