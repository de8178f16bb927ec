"""The small closed-world T5 learns to read clauses (which verb is whose), and token shards can be
embedded anew by another text encoder without encoding their video again."""

import numpy as np
import pytest
import torch

from phenaki_cli.data.encode import encode_dataset
from phenaki_cli.data.shapes_sampler import HELD_OUT, sample_captions
from phenaki_cli.data.tokens import load_shards, text_encoder_fingerprint
from phenaki_cli.modeldir import load_tokenizer
from phenaki_cli.text import TextEncoder, build_text_encoder
from phenaki_cli.train.text_encoder import clause_of_each_word, clause_targets, train_clause_reading

from conftest import one_error, run_cli

CAPTION = "a red circle moves right and a big blue square stays still on a gray background"
SWAPPED = "a red circle stays still and a big blue square moves right on a gray background"


@pytest.fixture(scope="module")
def captions():
    """Training-split captions (and the two above), enough to build a vocabulary from."""
    return sample_captions("train", 300) + [CAPTION, SWAPPED]


def test_each_word_is_given_its_own_clause():
    words = CAPTION.split()
    assert clause_of_each_word(words) == [0] * 5 + [-1] + [1] * 6 + [2] * 4
    ids = list(range(10, 10 + len(words)))
    targets = clause_targets(ids, words, len(words) + 2, pad_id=0)
    assert targets[1].tolist() == [11, 10, 11, 12, 13, 14, 0]  # "red": itself, then "a red circle moves right"
    assert targets[7].tolist() == [17, 16, 17, 18, 19, 20, 21]  # "big" in "a big blue square stays still"
    assert (targets[5] == -100).all() and (targets[-2:] == -100).all()  # "and", end of sequence, padding


def test_training_captions_hold_no_held_out_composition(captions):
    assert any(" and " in c for c in captions) and any(c.startswith("the ") for c in captions)
    for color, shape, action in HELD_OUT:
        assert not any(f"{color} {shape} {action}" in c for c in captions)


def red_state(encoder: TextEncoder, caption: str) -> torch.Tensor:
    return encoder.embed(caption)[1]  # the word "red"


def relative_change(encoder: TextEncoder) -> float:
    a, b = red_state(encoder, CAPTION), red_state(encoder, SWAPPED)
    return float((a - b).norm() / a.norm())


def test_a_trained_encoder_tells_which_verb_is_whose(captions):
    encoder = build_text_encoder(captions, d_model=64, layers=2, heads=2)
    untrained = relative_change(encoder)
    reading = train_clause_reading(encoder, captions, sample_captions("heldout", 50),
                                   steps=150, batch_size=32, lr=3e-3)
    # a random T5 barely lets the verb reach the state of "red"; the trained one puts it there
    assert untrained < 0.1 and relative_change(encoder) > 3 * untrained, (untrained, relative_change(encoder))
    assert reading.slot_accuracy > 0.8 and not any(p.requires_grad for p in encoder.model.parameters())
    assert reading.state_drift is None


def test_keeping_the_states_adds_the_clause_beside_them(captions):
    free, kept = (build_text_encoder(captions, d_model=64, layers=2, heads=2) for _ in range(2))
    settings = {"steps": 60, "batch_size": 32, "lr": 3e-3}
    moved = train_clause_reading(free, captions, captions[:40], **settings, keep_states=1e-9).state_drift
    held = train_clause_reading(kept, captions, captions[:40], **settings, keep_states=10.0).state_drift
    assert held < 0.5 * moved, (held, moved)


def test_data_embed_keeps_the_tokens_and_embeds_the_prompts_anew(tmp_path, tiny_model_dir, captions):
    tokenizer, _ = load_tokenizer(tiny_model_dir)
    encode_dataset("shapes", tmp_path / "shards", tokenizer, None, frames=9, prime_frames=5, count=4)
    other = build_text_encoder(captions, d_model=48, layers=1, heads=2, seed=3)
    other.save(tmp_path / "t5")
    code, _, err = run_cli("data", "embed", tmp_path / "shards", "-o", tmp_path / "again",
                            "--text-encoder", tmp_path / "t5")
    assert code == 0 and "4 video clips" in err, err
    old_index, old = load_shards(tmp_path / "shards")
    index, new = load_shards(tmp_path / "again")
    np.testing.assert_array_equal(new.tokens, old.tokens)
    assert new.prompts == old.prompts and index.text_dim == 48
    assert index.text_encoder_fingerprint == text_encoder_fingerprint(other) != old_index.text_encoder_fingerprint
    prompt = new.prompts[0]
    np.testing.assert_allclose(new.embeddings[prompt], other.embed(prompt).numpy(), atol=1e-3, rtol=1e-3)
    assert text_encoder_fingerprint(TextEncoder.load(tmp_path / "again" / "text_encoder")) == \
        index.text_encoder_fingerprint
    code, _, err = run_cli("data", "embed", tmp_path / "t5", "-o", tmp_path / "bad",
                            "--text-encoder", tmp_path / "t5")
    one_error(code, err, str(tmp_path / "t5"), "not a token-shard folder")
    code, _, err = run_cli("data", "embed", tmp_path / "shards", "-o", tmp_path / "again",
                            "--text-encoder", tmp_path / "t5")
    one_error(code, err, str(tmp_path / "again"))


def test_a_fresh_cross_attention_learns_to_read_another_text_encoder(tmp_path, tiny_model_dir, captions):
    tokenizer, _ = load_tokenizer(tiny_model_dir)
    encode_dataset("shapes", tmp_path / "shards", tokenizer, None, frames=5, prime_frames=1, count=4)
    common = ["--batch-size", "2", "--steps", "1", "--preview-every", "0", "-q"]
    code, _, err = run_cli("train", tmp_path / "shards", "-o", tmp_path / "base", "--tokenizer",
                            tiny_model_dir, "--preset", "tiny", *common)
    assert code == 0, err
    for name, dim in (("same-width", 128), ("narrow", 48)):
        build_text_encoder(captions, d_model=dim, layers=1, heads=2, seed=5).save(tmp_path / name)
        code, _, err = run_cli("data", "embed", tmp_path / "shards", "-o", tmp_path / f"shards-{name}",
                                "--text-encoder", tmp_path / name, "-q")
        assert code == 0, err
    tuned = ["train", tmp_path / "shards-same-width", "--init-from", tmp_path / "base", *common]
    code, _, err = run_cli(*tuned, "-o", tmp_path / "bad")
    one_error(code, err, "reads another text encoder", "--new-text-encoder", "--fresh-cross-attention")
    for flag in ("--fresh-cross-attention", "--new-text-encoder"):
        code, _, err = run_cli(*tuned, "-o", tmp_path / flag, flag)
        assert code == 0, err
        assert text_encoder_fingerprint(TextEncoder.load(tmp_path / flag / "text_encoder")) == \
            text_encoder_fingerprint(TextEncoder.load(tmp_path / "same-width"))
    code, _, err = run_cli("train", tmp_path / "shards", "-o", tmp_path / "bad", "--tokenizer",
                            tiny_model_dir, "--preset", "tiny", *common, "--new-text-encoder")
    one_error(code, err, "--new-text-encoder", "--init-from")
    code, _, err = run_cli("train", tmp_path / "shards-narrow", "--init-from", tmp_path / "base", *common,
                            "-o", tmp_path / "bad", "--fresh-cross-attention")
    one_error(code, err, "dim 48", "reads 128")
    assert not (tmp_path / "bad").exists()
