import dataclasses
import json

import pytest
import torch

from conftest import one_error, run_cli
from phenaki_cli.config import TOKENIZER_PRESETS
from phenaki_cli.data.datasets import Unreadable, VideoClips, read_manifest
from phenaki_cli.errors import UserError
from phenaki_cli.modeldir import load_tokenizer
from phenaki_cli.train.tokenizer import TrainSettings, train_tokenizer
from phenaki_cli.video_io import read_video

SETTINGS = dict(batch_size=2, frames=5, save_every=3, warmup_steps=2, lr=1e-3)


@pytest.mark.parametrize("extra", [{}, {"adversarial_weight": 0.1, "adversarial_start": 2}],
                         ids=["plain", "adversarial"])
def test_resume_continues_exactly(tmp_path, extra):
    """Killed after a checkpoint and resumed = never stopped (with a discriminator too: its
    weights live in the training state). Dead codes restart from the first step on, so the
    restarts' random draws must continue exactly too."""
    config = dataclasses.replace(TOKENIZER_PRESETS["tiny"], dead_code_steps=1)
    settings = dict(SETTINGS, **extra)
    train_tokenizer("shapes", tmp_path / "straight", config, TrainSettings(steps=6, **settings))
    def interrupt(step, row):
        if step == 4:  # after the checkpoint of step 3, one step is lost, as with a killed run
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_tokenizer("shapes", tmp_path / "split", config, TrainSettings(steps=6, **settings), on_step=interrupt)
    train_tokenizer("shapes", tmp_path / "split", config, TrainSettings(steps=6, **settings), resume=True)
    rows = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("straight", "split")]
    assert len(rows[0]) == 6 and [r["loss"] for r in rows[0]] == [r["loss"] for r in rows[1]]
    assert ("adv_d" in rows[0][-1]) == bool(extra) and "adv_d" not in rows[0][0]  # on from --adversarial-start
    a, _ = load_tokenizer(tmp_path / "straight")
    b, _ = load_tokenizer(tmp_path / "split")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    critics = [torch.load(tmp_path / d / "train_state.pt", weights_only=True)["objective"]
               for d in ("straight", "split")]
    assert bool(critics[0]) == bool(extra) and critics[0].keys() == critics[1].keys()
    assert all(torch.equal(critics[0][k], critics[1][k]) for k in critics[0])
    assert "discriminator" not in (tmp_path / "split" / "tokenizer.safetensors").read_bytes().decode("latin-1")
    with pytest.raises(UserError, match="trained (with|without) --adversarial; resume it (with|without)"):
        flipped = {} if extra else {"adversarial_weight": 0.1}
        train_tokenizer("shapes", tmp_path / "split", config, TrainSettings(steps=8, **SETTINGS, **flipped),
                        resume=True)


def test_decoder_only_fine_tune_keeps_every_token(tmp_path, tiny_phenaki_dir):
    """--init-from + --decoder-only + --refine-channels: a sharper decoder for the same tokens, so
    token files, shards and the transformer trained on them stay valid; export swaps it in."""
    from phenaki_cli.codec import encode_frames
    from phenaki_cli.data.shapes_sampler import sample_clip
    from phenaki_cli.data.tokens import tokenizer_fingerprint
    from phenaki_cli.pipeline import Phenaki
    from phenaki_cli.video_io import write_video

    base = tiny_phenaki_dir  # a full model: its transformer was made for its tokenizer's tokens
    common = ("--preset", "tiny", "--batch-size", "2", "--frames", "5", "--lr", "1e-3", "--quiet")
    code, _, stderr = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "sharp", "--steps", "3",
                              "--init-from", base, "--decoder-only", "--refine-channels", "8", *common)
    assert code == 0, stderr
    (old, old_hash), (sharp, sharp_hash) = load_tokenizer(base), load_tokenizer(tmp_path / "sharp")
    assert sharp.config.refine_channels == 8 and old_hash == sharp_hash
    assert tokenizer_fingerprint(old) == tokenizer_fingerprint(sharp)
    frames = sample_clip("test", 0, 9, size=32).frames
    assert (encode_frames(old, frames) == encode_frames(sharp, frames)).all()
    assert not torch.equal(old.to_rest.weight, sharp.to_rest.weight)  # the decoder did train
    assert sharp.refine.net[-1].weight.abs().sum() > 0
    # a second fine-tune deepens the trained head: the tokens still stay, the new blocks learn
    code, _, stderr = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "deeper", "--steps", "2", "--init-from",
                              tmp_path / "sharp", "--decoder-only", "--refine-blocks", "1", *common)
    assert code == 0, stderr
    deeper, deeper_hash = load_tokenizer(tmp_path / "deeper")
    assert deeper.config.refine_blocks == 1 and deeper_hash == old_hash
    assert (encode_frames(deeper, frames) == encode_frames(old, frames)).all()
    assert deeper.refine.blocks[0][-1].weight.abs().sum() > 0
    # a token file of the old tokenizer decodes with the new one
    write_video(tmp_path / "clip.mp4", frames, 8)
    assert run_cli("tokenize", tmp_path / "clip.mp4", "-o", tmp_path / "t.npz", "--model", base)[0] == 0
    code, _, stderr = run_cli("reconstruct", tmp_path / "t.npz", "-o", tmp_path / "r.mp4", "--model", tmp_path / "sharp")
    assert code == 0, stderr
    # export swaps the decoder into the full model; a tokenizer that makes other tokens is refused
    code, _, stderr = run_cli("export", base, "-o", tmp_path / "model", "--tokenizer", tmp_path / "sharp", "--quiet")
    assert code == 0, stderr
    assert Phenaki.from_pretrained(tmp_path / "model").tokenizer.config.refine_channels == 8
    assert run_cli("train-tokenizer", "shapes", "-o", tmp_path / "other", "--steps", "1", *common)[0] == 0
    code, _, stderr = run_cli("export", base, "-o", tmp_path / "model2", "--tokenizer", tmp_path / "other")
    assert code == 2 and "makes other tokens than" in stderr and not (tmp_path / "model2").exists()
    # resuming must keep the mode, or the encoder would start to move
    code, _, stderr = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "sharp", "--resume", "--quiet")
    assert code == 2 and "trained with --decoder-only; resume it with --decoder-only" in stderr
    code, _, stderr = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "x", "--init-from", base,
                              "--config", tmp_path / "sharp" / "config.json", *common)
    assert code == 2 and "--init-from takes the config" in stderr


def test_fine_tune_grows_the_codebook(tmp_path, tiny_phenaki_dir):
    """--init-from + --codebook-size: a fine-tune adds codes (for what the old ones fit badly) and
    keeps training; removing codes, or adding them while --decoder-only keeps the tokens, is refused."""
    common = ("--batch-size", "2", "--frames", "5", "--steps", "2", "--quiet")
    code, _, stderr = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "grown", "--init-from", tiny_phenaki_dir,
                              "--codebook-size", "320", "--dead-code-restart", "error", *common)
    assert code == 0, stderr
    grown, _ = load_tokenizer(tmp_path / "grown")
    assert grown.config.codebook_size == 320 and grown.config.dead_code_restart == "error"
    assert grown.quantizer.codebook.shape[0] == 320
    code, _, stderr = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "shrunk", "--init-from",
                              tiny_phenaki_dir, "--codebook-size", "128", *common)
    assert code == 2 and "--codebook-size 128: --init-from" in stderr and "has 256 codes" in stderr
    code, _, stderr = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "frozen", "--init-from",
                              tiny_phenaki_dir, "--codebook-size", "320", "--decoder-only", *common)
    assert code == 2 and "changes the tokens that --decoder-only keeps" in stderr


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """Two micro-batches of 2 clips give the same update as one batch of the same 4 clips (in fp32:
    bf16 rounds a batch of 4 differently from two of 2)."""
    config = TOKENIZER_PRESETS["tiny"]
    common = dict(frames=5, save_every=10, warmup_steps=1, lr=1e-3, steps=2, precision="fp32")
    train_tokenizer("shapes", tmp_path / "big", config, TrainSettings(batch_size=4, **common))
    train_tokenizer("shapes", tmp_path / "acc", config, TrainSettings(batch_size=2, accumulate=2, **common))
    a, _ = load_tokenizer(tmp_path / "big")
    b, _ = load_tokenizer(tmp_path / "acc")
    # parameters only: the dead-code counter counts forward passes, which accumulation doubles
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=name)


def test_shapes_dataset_reloads_through_the_user_dataset_code(tmp_path):
    code, _, stderr = run_cli("data", "shapes", "-n", "3", "-o", tmp_path / "ds", "--scenes", "1-2",
                              "--frames-per-scene", "9", "--size", "32")
    assert code == 0, stderr
    entries = read_manifest(tmp_path / "ds")
    assert len(entries) == 3 and all(e.path.is_file() and e.caption for e in entries)
    frames, caption = VideoClips(tmp_path / "ds", frames=5, size=32, fps=8)[0]
    assert frames.shape == (5, 32, 32, 3) and caption
    row = json.loads((tmp_path / "ds" / "captions.jsonl").read_text().splitlines()[0])
    assert row["scenes"][0]["start"] == 0 and read_video(tmp_path / "ds" / row["video"]).frames.shape[1] == 32


def test_csv_manifest_with_webvid_columns_and_corrupt_files_are_skipped(tmp_path):
    run_cli("data", "shapes", "-n", "2", "-o", tmp_path / "ds", "--frames-per-scene", "9", "--size", "32")
    (tmp_path / "ds" / "captions.jsonl").unlink()
    (tmp_path / "ds" / "videos" / "broken.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "ds" / "captions.csv").write_text(
        "videoid,name\nvideos/train-000000,first\nvideos/train-000001,second\nvideos/broken,bad\n")
    clips = VideoClips(tmp_path / "ds", frames=5, size=32, fps=8)
    results = [clips[i] for i in range(3)]
    bad = [r for r in results if isinstance(r, Unreadable)]
    assert len(bad) == 1 and bad[0].path.endswith("broken.mp4") and "broken.mp4" in bad[0].reason
    assert len(clips.skipped) == 1
    assert {r[1] for r in results if not isinstance(r, Unreadable)} == {"first", "second"}


def test_train_tokenizer_command_on_a_video_folder(tmp_path):
    run_cli("data", "shapes", "-n", "2", "-o", tmp_path / "ds", "--frames-per-scene", "9", "--size", "32")
    code, _, stderr = run_cli("train-tokenizer", tmp_path / "ds", "-o", tmp_path / "tok", "--preset", "tiny",
                              "--steps", "2", "--batch-size", "2", "--frames", "5", "--quiet")
    assert code == 0, stderr
    assert load_tokenizer(tmp_path / "tok")[0].config == TOKENIZER_PRESETS["tiny"]
    # mistakes (in this process: an interpreter start-up per case made this test a minute long)
    code, _, stderr = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "tok", "--preset", "tiny",
                               "--steps", "2")
    one_error(code, stderr, "already exists (pass --resume")
    code, _, stderr = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "t2", "--frames", "6")
    one_error(code, stderr, "got 6 frames")
    for args, message in [(["--adversarial", "-1"], "--adversarial and --adversarial-start must be >= 0"),
                          (["--l1", "-0.5"], "must be >= 0"),
                          (["--object-weight", "-3"], "--l1, --object-weight, --adversarial and"),
                          (["--dead-code-restart", "nearest"], "dead_code_restart must be one of random, error"),
                          (["--adversarial", "0.1", "--strategy", "fsdp"], "--adversarial is not supported with"),
                          (["--refine-channels", "-1"], "refine_channels, refine_features and refine_blocks must"),
                          (["--refine-blocks", "2"], "refine_blocks deepen the refinement head; give refine_chan"),
                          (["--encoder-window", "-1"], "encoder_window must be >= 0, got -1"),
                          (["--init-from", tmp_path / "tok", "--encoder-window", "1"],
                           "--encoder-window changes the encoder"),
                          (["--time-encoding", "relative"], "time_encoding must be one of absolute, stationary"),
                          (["--decoder-window", "-2"], "decoder_window must be >= 0, got -2"),
                          (["--init-from", tmp_path / "tok", "--time-encoding", "stationary"],
                           "--time-encoding changes the encoder"),
                          (["--init-from", tmp_path / "none"], "model directory not found"),
                          (["--decoder-only"], "--decoder-only trains the decoder of a trained tokenizer")]:
        code, _, stderr = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "t3", *args)
        one_error(code, stderr, message)
        assert not (tmp_path / "t3").exists()
    code, _, stderr = run_cli("train-tokenizer", tmp_path / "ds", "-o", tmp_path / "local", "--preset", "tiny",
                              "--encoder-window", "1", "--decoder-window", "1", "--time-encoding", "stationary",
                              "--steps", "1", "--batch-size", "2", "--frames", "5", "--quiet")
    assert code == 0, stderr
    local = load_tokenizer(tmp_path / "local")[0].config
    assert (local.encoder_window, local.decoder_window, local.time_encoding) == (1, 1, "stationary")
