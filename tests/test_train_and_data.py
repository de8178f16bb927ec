import json

import pytest
import torch

from conftest import run_cli
from phenaki_cli.config import TOKENIZER_PRESETS
from phenaki_cli.data.datasets import VideoClips, read_manifest
from phenaki_cli.modeldir import load_tokenizer
from phenaki_cli.train.tokenizer import TrainSettings, train_tokenizer
from phenaki_cli.video_io import read_video

SETTINGS = dict(batch_size=2, frames=5, save_every=3, warmup_steps=2, lr=1e-3)


def test_resume_continues_exactly(tmp_path):
    config = TOKENIZER_PRESETS["tiny"]
    train_tokenizer("shapes", tmp_path / "straight", config, TrainSettings(steps=6, **SETTINGS))
    def interrupt(step, row):
        if step == 4:  # after the checkpoint of step 3, one step is lost, as with a killed run
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_tokenizer("shapes", tmp_path / "split", config, TrainSettings(steps=6, **SETTINGS), on_step=interrupt)
    train_tokenizer("shapes", tmp_path / "split", config, TrainSettings(steps=6, **SETTINGS), resume=True)
    losses = [[json.loads(line)["loss"] for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
              for d in ("straight", "split")]
    assert len(losses[0]) == 6 and losses[0] == losses[1]
    a, _ = load_tokenizer(tmp_path / "straight")
    b, _ = load_tokenizer(tmp_path / "split")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """Two micro-batches of 2 clips give the same update as one batch of the same 4 clips."""
    config = TOKENIZER_PRESETS["tiny"]
    common = dict(frames=5, save_every=10, warmup_steps=1, lr=1e-3, steps=2)
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
    assert sum(r is None for r in results) == 1 and len(clips.skipped) == 1
    assert {r[1] for r in results if r is not None} == {"first", "second"}


def test_train_tokenizer_command_on_a_video_folder(tmp_path):
    run_cli("data", "shapes", "-n", "2", "-o", tmp_path / "ds", "--frames-per-scene", "9", "--size", "32")
    code, _, stderr = run_cli("train-tokenizer", tmp_path / "ds", "-o", tmp_path / "tok", "--preset", "tiny",
                              "--steps", "2", "--batch-size", "2", "--frames", "5", "--quiet")
    assert code == 0, stderr
    assert load_tokenizer(tmp_path / "tok")[0].config == TOKENIZER_PRESETS["tiny"]
    code, _, stderr = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "tok", "--preset", "tiny", "--steps", "2")
    assert code == 2 and "already exists (pass --resume" in stderr
    code, _, stderr = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "t2", "--frames", "6")
    assert code == 2 and "got 6 frames" in stderr
