import json

import numpy as np
import pytest

from conftest import run_cli
from phenaki_cli.data.shapes_world import render_story
from phenaki_cli.video_io import read_video, write_video

SCRIPT = "[2s] a red circle moves right and a big blue square grows\n[16f] the red circle turns yellow\n"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    write_video(path, render_story(["a red circle moves right"], 10, seed=0).frames, fps=8)
    return path


def test_tokenize_then_reconstruct_from_tokens(tiny_model_dir, clip, tmp_path):
    code, stdout, stderr = run_cli("tokenize", clip, "-o", tmp_path / "t.npz", "--model", tiny_model_dir, "--json")
    assert code == 0, stderr
    info = json.loads(stdout)
    assert info["grid"] == [5, 4, 4] and info["frames"] == 9 and info["source_frames"] == 10  # trimmed to 1 + 2·4
    with np.load(tmp_path / "t.npz") as data:
        assert data["tokens"].shape == (5, 4, 4) and str(data["config_hash"]) == info["config_hash"]
    code, _, stderr = run_cli("reconstruct", tmp_path / "t.npz", "-o", tmp_path / "r.mp4", "--model", tiny_model_dir)
    assert code == 0, stderr
    assert read_video(tmp_path / "r.mp4").frames.shape == (9, 32, 32, 3)


def test_bf16_tokenize_and_reconstruct_match_fp32_closely(tmp_path):
    """--precision bf16 on the shipped model: most tokens as in fp32 (near-ties may flip) and the
    same reconstruction quality."""
    clip = tmp_path / "clip.mp4"
    write_video(clip, render_story(["a big red circle moves right and a blue square moves down"], 17, seed=1).frames, 8)
    grids, scores = {}, {}
    for precision in ("fp32", "bf16"):
        code, stdout, stderr = run_cli("tokenize", clip, "-o", tmp_path / f"{precision}.npz", "--precision", precision)
        assert code == 0, stderr
        grids[precision] = np.load(tmp_path / f"{precision}.npz")["tokens"]
        code, stdout, stderr = run_cli("reconstruct", clip, "-o", tmp_path / f"{precision}.mp4", "--json",
                                       "--precision", precision)
        assert code == 0, stderr
        scores[precision] = json.loads(stdout)["psnr"]
    assert (grids["fp32"] == grids["bf16"]).mean() > 0.8
    assert abs(scores["fp32"] - scores["bf16"]) < 0.5


def test_reconstruct_reports_psnr_ssim_and_writes_comparison(tiny_model_dir, clip, tmp_path):
    code, stdout, stderr = run_cli("reconstruct", clip, "-o", tmp_path / "r.gif", "--compare", tmp_path / "c.mp4",
                                   "--model", tiny_model_dir, "--json")
    assert code == 0, stderr
    info = json.loads(stdout)
    assert len(info["per_frame"]) == 9 and np.isfinite(info["psnr"]) and -1 <= info["ssim"] <= 1
    assert read_video(tmp_path / "c.mp4").frames.shape == (9, 32, 64, 3)


def test_bad_inputs_give_one_line_and_no_output(tiny_model_dir, clip, tmp_path):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    (tmp_path / "exists.npz").write_text("x")
    cases = [
        (["tokenize", tmp_path / "missing.mp4", "-o", tmp_path / "o.npz"], "missing.mp4: file not found"),
        (["tokenize", not_video, "-o", tmp_path / "o.npz"], "notes.mp4: not a readable video"),
        (["tokenize", clip, "-o", tmp_path / "o.npz", "--model", tmp_path / "nomodel"], "model directory not found"),
        (["tokenize", clip, "-o", blocker / "o.npz"], "cannot"),
        (["tokenize", clip, "-o", tmp_path / "exists.npz"], "already exists (pass --overwrite"),
        (["reconstruct", tmp_path / "exists.npz", "-o", tmp_path / "o.mp4"], "not a readable tokens file"),
        (["tokenize", clip, "-o", tmp_path / "o.npz", "--precision", "fp8"], "--precision 'fp8': choose one of"),
        (["reconstruct", clip, "-o", tmp_path / "o.mp4", "--precision", "fp16"], "fp16 needs a CUDA device"),
    ]
    for args, message in cases:
        code, stdout, stderr = run_cli(*args, "--model", tiny_model_dir) if "--model" not in args else run_cli(*args)
        assert code == 2, (args, stderr)
        assert message in stderr and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.npz", "file.txt", "notes.mp4"]


def test_render_and_eval_a_story(tmp_path):
    script = tmp_path / "story.txt"
    script.write_text(SCRIPT)
    code, _, stderr = run_cli("data", "render", script, "-o", tmp_path / "s.mp4")
    assert code == 0, stderr
    assert json.loads((tmp_path / "s.json").read_text())["scenes"][1] == {
        "prompt": "the red circle turns yellow", "start": 16, "end": 32}
    code, stdout, stderr = run_cli("eval", tmp_path / "s.mp4", "--story", script, "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["prompt_accuracy"] == 1.0 and result["continuity"] == 1.0
    assert result["clean_scenes"] == 1.0 and result["extra_objects_per_frame"] <= 0.1  # a true render
    assert result["breakdown"] == {"found": 1.0, "by_verb": {"grows": [1.0, 1], "moves": [1.0, 1], "turns": [1.0, 1]},
                                   "by_objects": {"1": [1.0, 1], "2": [1.0, 2]}}
    code, stdout, _ = run_cli("eval", "--suite", tmp_path)
    assert code == 0 and "prompt accuracy 1.000 over 3 clauses" in stdout and "clean scenes 1.000" in stdout
    assert ("by verb: grows 1.00 (1), moves 1.00 (1), turns 1.00 (1); by scene: 1 object 1.00 (1), 2 objects 1.00 (2); "
            "the clause's object found in 1.000") in stdout


def test_eval_names_bad_script_words(tmp_path):
    script = tmp_path / "bad.txt"
    script.write_text("a red circle moves right\nthe red circel grows\n")
    code, _, stderr = run_cli("data", "render", script, "-o", tmp_path / "s.mp4")
    assert code == 2 and "bad.txt:2:" in stderr and "'circel'" in stderr
