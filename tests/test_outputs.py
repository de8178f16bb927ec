"""Nothing lost: a command's outputs are checked before any work and written as one unit (all new or
all old, whatever fails or interrupts), disk errors are one line, bad numbers are refused where
they are parsed, and user text is never read as markup."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import build_tiny_phenaki, one_error, run_cli

from phenaki_cli.files import Outputs
from phenaki_cli.jobs import render_video, storyboard_path, video_outputs
from phenaki_cli.story import Scene, sidecar_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_phenaki(prompts=("a red square moves left", "a blue circle"))


def render(tiny, output: Path, overwrite: bool, storyboard: bool = True, seed: int = 0) -> dict:
    outputs = video_outputs(output, storyboard, overwrite)
    return render_video(tiny, [Scene("a red square moves left", 9), Scene("a blue circle", 5)], outputs,
                        tiny.settings(), seed, tiny.fps)


@pytest.mark.parametrize("stage", ["video", "storyboard", "sidecar", "first rename", "last rename"])
def test_an_interruption_at_any_stage_leaves_the_old_set(tiny, tmp_path, monkeypatch, stage):
    output = tmp_path / "story.mp4"
    render(tiny, output, overwrite=False)
    before = snapshot(tmp_path)
    assert set(before) == {"story.mp4", "story.json", "story.storyboard.png"}

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    import phenaki_cli.files as files
    import phenaki_cli.jobs as jobs
    if stage == "video":
        monkeypatch.setattr(jobs.VideoWriter, "write", interrupt)
    elif stage == "storyboard":
        monkeypatch.setattr(jobs, "write_storyboard", interrupt)
    elif stage == "sidecar":
        monkeypatch.setattr(Path, "write_text", interrupt)
    else:  # renames: the second or the last of the three fails, after others are in place
        real, calls = os.replace, []

        def replace(source, target):
            calls.append(target)
            # each output takes two renames (the old one aside, the new one in)
            if len(calls) == (2 if stage == "first rename" else 6):
                raise KeyboardInterrupt
            return real(source, target)
        monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        render(tiny, output, overwrite=True, seed=1)  # another seed: other frames
    assert snapshot(tmp_path) == before, stage  # byte for byte, and no temporary left
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    render(tiny, output, overwrite=True, seed=1)
    after = snapshot(tmp_path)
    assert set(after) == set(before) and after["story.mp4"] != before["story.mp4"]
    # the sheet, written a scene at a time: two rows of four 2×-scaled frames beside their prompts
    from phenaki_cli.video_io import read_video
    assert read_video(tmp_path / "story.storyboard.png").frames.shape == (1, 2 * (64 + 4) + 4, 200 + 4 * 68 + 4, 3)


def test_every_output_is_checked_before_any_work(tiny_phenaki_dir, tmp_path):
    script = tmp_path / "s.txt"
    script.write_text("a red square moves left\n")
    for existing in ("x.json", "x.storyboard.png"):
        (tmp_path / existing).write_text("keep me")
        code, _, err = run_cli("story", script, "-o", tmp_path / "x.mp4", "--storyboard", "--model",
                                tiny_phenaki_dir)
        one_error(code, err, existing, "already exists")
        assert (tmp_path / existing).read_text() == "keep me" and not (tmp_path / "x.mp4").exists()
        (tmp_path / existing).unlink()
    # a command never replaces its own input, even with --overwrite
    from phenaki_cli.video_io import write_video
    write_video(tmp_path / "v.mp4", np.zeros((9, 32, 32, 3), np.uint8), 8)
    kept = (tmp_path / "v.mp4").read_bytes()
    for args in (["inpaint", tmp_path / "v.mp4", "a blue circle", "--box", "0,0,8,8"],
                 ["edit", tmp_path / "v.mp4", "a blue circle"], ["reconstruct", tmp_path / "v.mp4"],
                 ["story", tmp_path / "v.json", "--from", tmp_path / "v.mp4"]):
        if args[0] == "story":
            (tmp_path / "v.json").write_text("a red square moves left\n")
        code, _, err = run_cli(*args, "-o", tmp_path / "v.mp4", "--overwrite", "--model", tiny_phenaki_dir)
        one_error(code, err, "is also an input of this command")
        assert (tmp_path / "v.mp4").read_bytes() == kept
    # the format of an output before the model loads (the model path does not even exist)
    code, _, err = run_cli("generate", "a red square", "-o", tmp_path / "x.avi", "--model", tmp_path / "no")
    one_error(code, err, "unsupported output format '.avi'")
    code, _, err = run_cli("story", script, "-o", tmp_path / "x.png", "--model", tiny_phenaki_dir)
    one_error(code, err, "a .png holds one frame")
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".x*"))


@pytest.mark.parametrize("args, message", [
    (["--fps", "nan"], "--fps must be a number > 0 and <= 240, got nan"),
    (["--fps", "1e9"], "--fps must be a number"),
    (["--seconds", "inf"], "--seconds must be a positive number"),
    (["--seed", str(2 ** 64)], "--seed must be a number >= 0"),
    (["--seed", "-1"], "--seed must be a number >= 0"),
    (["--guidance", "nan"], "--guidance must be a number >= 0"),
    (["--temperature", "inf"], "--temperature must be a number >= 0"),
    (["--steps", "0"], "--steps must be a number >= 1"),
    (["--plausibility", "1"], "--plausibility must be a number >= 0 and <= 0.999, got 1.0"),
])
def test_bad_numbers_are_refused_where_they_are_parsed(tmp_path, args, message):
    code, _, err = run_cli("generate", "a red circle", "-o", tmp_path / "x.mp4", "--model", tmp_path / "no",
                            *args)
    one_error(code, err, message)


def test_user_text_is_never_markup_and_long_prompts_are_told(tiny_phenaki_dir, tmp_path):
    script = tmp_path / "s.txt"
    script.write_text("[nans] a red square\n")
    code, _, err = run_cli("story", script, "-o", tmp_path / "x.mp4", "--model", tiny_phenaki_dir)
    one_error(code, err, "bad duration '[nans]'")
    (tmp_path / "[red]").mkdir()
    code, _, err = run_cli("story", tmp_path / "[red]" / "missing.txt", "-o", tmp_path / "x.mp4",
                            "--model", tiny_phenaki_dir)
    one_error(code, err, "[red]/missing.txt")
    script.write_text("[2f] " + " ".join(["a red square moves left"] * 20) + "\n[2f] a [blue] circle\n")
    code, _, err = run_cli("story", script, "-o", tmp_path / "[red]" / "y.mp4", "--model", tiny_phenaki_dir)
    assert code == 0, err
    assert f"{script}:1: the prompt is 101 tokens; the text encoder reads the first 77" in err
    assert "'[blue]'" in err and f"wrote {tmp_path / '[red]' / 'y.mp4'}" in err
    sidecar = json.loads((tmp_path / "[red]" / "y.json").read_text())
    assert sidecar["scenes"][1]["prompt"] == "a [blue] circle"


def test_a_corrupt_text_encoder_is_one_line(tiny_phenaki_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_phenaki_dir, model)
    weights = model / "text_encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    code, _, err = run_cli("generate", "a red square", "-o", tmp_path / "x.mp4", "--model", model)
    one_error(code, err, "text_encoder", "cannot load a T5 text encoder")


def test_inpaint_says_when_it_trims_frames(tiny_phenaki_dir, tmp_path):
    from phenaki_cli.video_io import write_video
    write_video(tmp_path / "v.mp4", np.zeros((12, 32, 32, 3), np.uint8), 8)
    code, _, err = run_cli("inpaint", tmp_path / "v.mp4", "a blue circle", "--box", "0,0,8,8", "-o",
                            tmp_path / "out.mp4", "--model", tiny_phenaki_dir, "--steps", "1")
    assert code == 0, err
    assert "note: used the first 11 of 12 frames" in err


def _mount_small_disk(folder: Path, size: str) -> bool:
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return result.returncode == 0


def test_a_full_disk_is_one_line_and_keeps_the_old_files(tiny_phenaki_dir, tmp_path):
    disk = tmp_path / "disk"
    if not _mount_small_disk(disk, "1m"):
        pytest.skip("cannot mount a small tmpfs here (needs root): the injected-failure tests cover the rest")
    try:
        script = tmp_path / "s.txt"
        script.write_text("[9f] a red square moves left\n")
        code, _, err = run_cli("story", script, "-o", disk / "b.mp4", "--model", tiny_phenaki_dir, "-q")
        assert code == 0, err
        before = snapshot(disk)
        # fill the disk to its last few hundred bytes
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * max(0, free - 512))
        before = snapshot(disk)
        script.write_text("[33f] a red square moves left\n[33f] a blue circle\n")
        code, _, err = run_cli("story", script, "-o", disk / "b.mp4", "--overwrite", "--storyboard",
                                "--model", tiny_phenaki_dir)
        one_error(code, err, "No space left on device", "nothing was replaced")
        assert snapshot(disk) == before and not [p for p in disk.iterdir() if p.name.startswith(".")]
        code, _, err = run_cli("story", script, "-o", disk / "new.mp4", "--model", tiny_phenaki_dir)
        one_error(code, err, "No space left on device")
        assert snapshot(disk) == before
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_outputs_refuse_each_existing_file_and_the_inputs(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    from phenaki_cli.errors import UserError
    with pytest.raises(UserError, match="a.json: already exists"):
        Outputs([tmp_path / "a.json", tmp_path / "a.mp4"], overwrite=False)
    with pytest.raises(UserError, match="is also an input"):
        Outputs([tmp_path / "a.json"], overwrite=True, inputs=[tmp_path / "." / "a.json"])
    assert sidecar_path(tmp_path / "a.mp4").name == "a.json" and storyboard_path(tmp_path / "a.mp4").name == \
        "a.storyboard.png"
