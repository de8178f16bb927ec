"""Training on your own videos as a new user meets it: resumes that continue the same run, one
clear line for each mistake, skipped files named once, outputs with the usual modes, a training
state that cannot run code, plain log lines in a file, Ctrl-C that says what was kept."""

import dataclasses
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from phenaki_cli.data.encode import encode_dataset
from phenaki_cli.modeldir import load_tokenizer, read_config
from phenaki_cli.train.checkpoint import STATE_FILE

from conftest import one_error, run_cli

TINY = ["--preset", "tiny", "--batch-size", "2", "--frames", "5", "--preview-every", "0"]


def steps_of(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A user's video folder: 3 good clips of 9 frames, one corrupt file, one 2-frame clip, captions."""
    from phenaki_cli.data.shapes_sampler import sample_clip
    from phenaki_cli.video_io import write_video

    root = tmp_path_factory.mktemp("own") / "videos"
    root.mkdir()
    rows = []
    for i in range(3):
        clip = sample_clip("train", i, 9, size=32)
        write_video(root / f"clip{i}.mp4", clip.frames, 8)
        rows.append(f"clip{i}.mp4,{clip.caption}")
    (root / "broken.mp4").write_bytes(b"\x00" * 64)
    write_video(root / "short.mp4", sample_clip("train", 9, 2, size=32).frames, 8)
    rows += ["broken.mp4,a red square", "short.mp4,a blue circle"]
    (root / "captions.csv").write_text("video,caption\n" + "\n".join(rows) + "\n")
    return root


def test_resume_takes_the_runs_settings_and_refuses_other_ones(tmp_path):
    run = tmp_path / "tok"
    code, _, err = run_cli("train-tokenizer", "shapes", "-o", run, *TINY, "--steps", "6", "--save-every",
                            "2", "--keep-last", "2", "--until-step", "2", "-q")
    assert code == 0, err
    assert steps_of(run) == [1, 2]
    for option, message in [(["--steps", "8"], "--steps 8: "), (["--batch-size", "4"], "--batch-size 4: "),
                            (["--frames", "9"], "--frames 9: "), (["--keep-last", "1"], "--keep-last 1: "),
                            (["--preset", "shapes"], "image_size"), (["--encoder-window", "1"], "encoder_window")]:
        code, _, err = run_cli("train-tokenizer", "shapes", "-o", run, "--resume", *option)
        one_error(code, err, message)
    assert steps_of(run) == [1, 2]
    # the same command line again, or --resume alone: the run continues, and says how
    code, _, err = run_cli("train-tokenizer", "shapes", "-o", run, "--resume", "--until-step", "4")
    assert code == 0, err
    assert "resuming" in err and "from step 2 of 6" in err and "--batch-size 2" in err and "--keep-last 2" in err
    code, _, err = run_cli("train-tokenizer", "shapes", "-o", run, *TINY, "--steps", "6", "--save-every",
                            "2", "--keep-last", "2", "--resume", "-q")
    assert code == 0, err
    assert steps_of(run) == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000004", "step-000006"]
    # stopped twice and resumed = one straight run
    code, _, err = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "straight", *TINY, "--steps", "6",
                            "--save-every", "2", "--keep-last", "2", "-q")
    assert code == 0, err
    a, b = load_tokenizer(run)[0].state_dict(), load_tokenizer(tmp_path / "straight")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mistakes_in_training_options_are_one_line_and_write_nothing(tmp_path, folder, tiny_model_dir):
    cases = [
        (["train-tokenizer", "shapes", *TINY, "--batch-size", "0"], ["--batch-size must be at least 1"]),
        (["train-tokenizer", "shapes", *TINY, "--lr", "nan"], ["--lr must be a number > 0"]),
        (["train-tokenizer", "shapes", *TINY, "--threads", "-1"], ["--threads must be at least 0"]),
        # every clip shorter than --frames: nothing to learn from, so no model
        (["train-tokenizer", folder, *TINY, "--frames", "13"], [str(folder), "none of its 5 files", "13"]),
        (["train", "shapes", "--tokenizer", tiny_model_dir, "--preset", "tiny", "--frames", "5", "--batch-size", "0"],
         ["--batch-size must be at least 1"]),
    ]
    for args, fragments in cases:
        out = tmp_path / "out"
        code, _, err = run_cli(*args, "-o", out, "--steps", "2")
        one_error(code, err, *fragments)
        assert not out.exists() and not list(tmp_path.glob(".out*")), args


def test_skipped_files_are_named_once_and_counted_once(tmp_path, folder):
    run = tmp_path / "tok"
    # 8 steps of 2 clips read the 5 files over three epochs: 2 bad files, however often read
    code, _, err = run_cli("train-tokenizer", folder, "-o", run, *TINY, "--steps", "8", "--save-every", "4",
                            "--until-step", "4")
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: skipped")]
    assert len(notes) == 2 and any("broken.mp4" in n for n in notes) and any("short.mp4: 2 frames" in n for n in notes)
    code, _, err = run_cli("train-tokenizer", folder, "-o", run, "--resume")
    assert code == 0, err
    assert "note: skipped" not in err  # named before the resume already
    assert "skipped 2 unreadable or too-short files" in err and "broken.mp4" in err.splitlines()[-1]
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["skipped_files"] == 2
    # encoding names them too, and the shards keep the reasons
    code, _, err = run_cli("data", "encode", folder, "-o", tmp_path / "shards", "--tokenizer", run,
                            "--frames", "5", "--prime-frames", "1")
    assert code == 0, err
    assert sum(line.startswith("note: skipped") for line in err.splitlines()) == 2
    # stderr is not a terminal here: plain progress lines, the last one at the 3 files encoded of 5
    progress = [line for line in err.splitlines() if line.startswith("encode ")]
    assert progress and progress[-1].startswith("encode 3/5 files") and "files/s ETA" in progress[-1], err
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert index["skipped"] == 2 and len(index["skipped_files"]) == 2


def test_caption_files_of_other_names(tmp_path, folder, tiny_model_dir):
    import shutil

    webvid = tmp_path / "webvid"
    shutil.copytree(folder, webvid)
    rows = (webvid / "captions.csv").read_text().replace("video,caption", "videoid,name").replace(".mp4", "")
    (webvid / "captions.csv").unlink()
    (webvid / "results_2M_train.csv").write_text(rows)  # WebVid's own file name and columns
    code, _, err = run_cli("data", "encode", webvid, "-o", tmp_path / "shards", "--tokenizer",
                            tiny_model_dir, "--frames", "5", "--prime-frames", "1", "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "shards" / "index.json").read_text())["shards"][0]["examples"] == 3
    (webvid / "results_2M_train.csv").rename(webvid / "captions.txt")
    code, _, err = run_cli("data", "encode", webvid, "-o", tmp_path / "s2", "--tokenizer", tiny_model_dir,
                            "--frames", "5", "--prime-frames", "1")
    one_error(code, err, "none of its 5 files has a caption", "captions.txt is not read")
    (webvid / "captions.txt").write_text("")
    (webvid / "a.csv").write_text("video,caption\n")
    (webvid / "b.csv").write_text("video,caption\n")
    code, _, err = run_cli("data", "encode", webvid, "-o", tmp_path / "s3", "--tokenizer", tiny_model_dir,
                            "--frames", "5", "--prime-frames", "1")
    one_error(code, err, "several caption files (a.csv, b.csv)")


def test_shards_fix_the_window_and_the_text_encoder(tmp_path, tiny_model_dir):
    tokenizer, _ = load_tokenizer(tiny_model_dir)
    encode_dataset("shapes", tmp_path / "shards", tokenizer, None, frames=9, prime_frames=5, count=6)
    common = ["train", tmp_path / "shards", "--tokenizer", tiny_model_dir, "--preset", "tiny", "--batch-size", "2",
              "--steps", "2", "--preview-every", "0", "-q"]
    code, _, err = run_cli(*common, "-o", tmp_path / "bad", "--frames", "17")
    one_error(code, err, "--frames 17", "were encoded with --frames 9")
    code, _, err = run_cli(*common, "-o", tmp_path / "run")  # the shards' 9-frame clips, not the default 17
    assert code == 0, err
    assert read_config(tmp_path / "run")["sampling"]["window_frames"] == 9
    from phenaki_cli.text import build_text_encoder
    build_text_encoder(["another world entirely"], d_model=32, layers=1, heads=2).save(tmp_path / "t5")
    code, _, err = run_cli(*common, "-o", tmp_path / "bad", "--text-encoder", tmp_path / "t5")
    one_error(code, err, f"--text-encoder {tmp_path / 't5'}", "encoded with another one")
    # image shards embedded by another text encoder: the message says how to encode them
    images = tmp_path / "images"
    images.mkdir()
    from phenaki_cli.video_io import write_png
    write_png(images / "0.png", np.zeros((32, 32, 3), np.uint8))
    (images / "0.txt").write_text("another world entirely\n")
    code, _, err = run_cli("data", "encode", images, "--images", "-o", tmp_path / "image-shards",
                            "--tokenizer", tiny_model_dir, "-q")
    assert code == 0, err
    code, _, err = run_cli(*common, "-o", tmp_path / "bad", "--images", tmp_path / "image-shards")
    one_error(code, err, "another text encoder", f"--text-encoder {tmp_path / 'shards' / 'text_encoder'}")
    # resuming with the design it was made with is fine; another design is refused, naming the field
    code, _, err = run_cli(*common, "-o", tmp_path / "run", "--resume", "--attention", "factorized")
    one_error(code, err, "attention 'full'", "'factorized'")
    code, _, err = run_cli(*common, "-o", tmp_path / "run", "--resume", "--attention", "full")
    assert code == 0, err


def test_a_config_file_overrides_only_the_fields_it_names(tmp_path):
    from phenaki_cli.config import TOKENIZER_PRESETS
    (tmp_path / "c.json").write_text(json.dumps({"codebook_size": 128}))
    code, _, err = run_cli("train-tokenizer", "shapes", "-o", tmp_path / "tok", *TINY, "--steps", "1",
                            "--config", tmp_path / "c.json", "-q")
    assert code == 0, err
    config = load_tokenizer(tmp_path / "tok")[0].config
    assert config.codebook_size == 128 and config.dim == TOKENIZER_PRESETS["tiny"].dim
    assert config.image_size == TOKENIZER_PRESETS["tiny"].image_size


def test_outputs_get_the_users_umask_and_resume_never_unpickles(tmp_path):
    run = tmp_path / "tok"
    old = os.umask(0o027)
    try:
        code, _, err = run_cli("train-tokenizer", "shapes", "-o", run, *TINY, "--steps", "2",
                                "--keep-last", "2", "--save-every", "1", "-q")
    finally:
        os.umask(old)
    assert code == 0, err
    modes = {p.relative_to(run).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [run, *run.rglob("*")]}
    assert modes["."] == 0o750 and modes["tokenizer.safetensors"] == 0o640, modes
    assert all(m == (0o750 if (run / p).is_dir() else 0o640) for p, m in modes.items()), modes
    # a training state that would run code when unpickled is refused, and the code does not run
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    state = torch.load(run / STATE_FILE, weights_only=True)
    torch.save(dict(state, settings=Payload()), run / STATE_FILE)
    code, _, err = run_cli("train-tokenizer", "shapes", "-o", run, "--resume")
    one_error(code, err, STATE_FILE, "refusing to load it")
    assert not marker.exists()


def test_log_lines_in_a_file_and_ctrl_c_says_what_was_kept(tmp_path):
    run = tmp_path / "tok"
    log = tmp_path / "log.txt"
    with log.open("w") as stderr:  # stderr is a file, as in a cluster job
        process = subprocess.Popen([sys.executable, "-m", "phenaki_cli", "train-tokenizer", "shapes", "-o", run,
                                    *TINY, "--steps", "100000", "--save-every", "3", "--log-every", "2"],
                                   stderr=stderr, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not run.exists() and time.monotonic() < deadline:  # the first checkpoint
            time.sleep(0.2)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
    lines = log.read_text().splitlines()
    progress = [line for line in lines if line.startswith("train-tokenizer step ")]
    assert progress and all("/100000 loss" in line and "steps/s ETA" in line for line in progress), lines
    assert "Traceback" not in log.read_text()
    last = lines[-1]
    saved = max(steps_of(run))
    assert last.startswith("interrupted after step ") and f"keeps the checkpoint of step {saved}" in last, lines
    assert saved % 3 == 0


def test_a_ctrl_c_during_a_checkpoint_write_waits_for_it(tmp_path, monkeypatch):
    """A signal that lands while a checkpoint is written (the final renames hold it back until they
    are done) stops the run after the write, and the step it names is the one now on disk."""
    import phenaki_cli.runtime as runtime
    import phenaki_cli.train.loop as loop
    from phenaki_cli.config import TOKENIZER_PRESETS
    from phenaki_cli.train.tokenizer import TrainSettings, train_tokenizer

    write = loop.save_checkpoint

    def write_then_signal(out, sections, state, step, *args, **kwargs):
        write(out, sections, state, step, *args, **kwargs)
        if step == 3:  # as when the held signal is delivered on leaving the renames
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(loop, "save_checkpoint", write_then_signal)
    monkeypatch.setattr(runtime, "_interrupted", False)  # put back afterwards: the flag is process-wide
    previous = signal.signal(signal.SIGINT, runtime.on_interrupt)  # the CLI's handler
    try:
        with pytest.raises(loop.TrainingInterrupted) as stopped:
            train_tokenizer("shapes", tmp_path / "tok", TOKENIZER_PRESETS["tiny"],
                            TrainSettings(steps=9, batch_size=2, frames=5, save_every=3, preview_every=0))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (stopped.value.step, stopped.value.saved) == (3, 3)
    assert steps_of(tmp_path / "tok") == [1, 2, 3]


def test_an_offline_hub_id_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli("generate", "a red circle", "-o", tmp_path / "g.mp4", "--text-encoder", "t5-small")
    one_error(code, err, "t5-small", "not in the Hugging Face cache", "cannot be reached")


def test_reconstruct_says_when_it_trims_frames(tmp_path, tiny_model_dir):
    from phenaki_cli.video_io import write_video
    write_video(tmp_path / "v.mp4", np.zeros((12, 32, 32, 3), np.uint8), 8)
    code, _, err = run_cli("reconstruct", tmp_path / "v.mp4", "-o", tmp_path / "r.mp4", "--model",
                            tiny_model_dir)
    assert code == 0, err
    assert "note: used the first 11 of 12 frames (the tokenizer takes 1 + 2·n)" in err


def test_a_setting_newer_than_a_run_counts_as_its_default_on_resume(tmp_path):
    from phenaki_cli.errors import UserError
    from phenaki_cli.train.transformer import TransformerTrainSettings as Settings

    saved = dataclasses.asdict(Settings(predict_share=0.1))
    del saved["forecast_share"]  # a run started before the forecast task existed trained without it
    Settings(predict_share=0.1).check_same_run(saved, tmp_path)
    with pytest.raises(UserError, match=r"--tasks forecast=0\.3: .* was started with --tasks forecast=0\.0"):
        Settings(predict_share=0.1, forecast_share=0.3).check_same_run(saved, tmp_path)
    # a run's crop share is its own: resuming with another one is refused, naming the flag
    with pytest.raises(UserError, match=r"--crop-share 0\.75: .* was started with --crop-share 0\.25"):
        Settings(predict_share=0.1, crop_share=0.75).check_same_run(saved, tmp_path)
