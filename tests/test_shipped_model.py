"""Checks on the shipped default model (models/shapes-64): it loads, fits its budget, and plays."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from phenaki_cli.data.shapes_sampler import sample_rendered_story
from phenaki_cli.data.shapes_world import vocabulary
from phenaki_cli.eval.metrics import psnr
from phenaki_cli.pipeline import Phenaki
from phenaki_cli.video_io import frames_to_tensor, read_video, tensor_to_frames

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "shapes-64"


@pytest.fixture(scope="module")
def shipped():
    return Phenaki.from_pretrained(SHIPPED)


def test_shipped_model_is_complete_and_small(shipped):
    size = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert size <= 40e6
    assert (SHIPPED / "MODEL_CARD.md").is_file()
    assert shipped.text_encoder.unknown_words(" ".join(vocabulary())) == []
    assert shipped.tokenizer.config.image_size == 64 and shipped.fps == 8


@torch.inference_mode()
def test_shipped_tokenizer_reconstructs_held_out_clips(shipped):
    scores = []
    for i in range(4):
        frames = sample_rendered_story("test", i).rendering.frames[:17]
        recon = tensor_to_frames(shipped.tokenizer(frames_to_tensor(frames)[None]).reconstruction[0])
        scores.append(psnr(frames, recon))
    assert np.mean(scores) > 33.0, scores  # MODEL_CARD.md: 35.0 dB mean on 30 test-split clips (these 4: 34.3)


def test_default_model_plays_a_story(tmp_path):
    script = tmp_path / "story.txt"
    script.write_text("a big red circle moves right\n[8f] the red circle turns green\n")
    out = tmp_path / "story.mp4"
    # no --model: the shipped one; started as a shell starts it, so the installed entry point is checked too
    code, _, err = run_cli("story", script, "-o", out, "--seed", "0", "-q", process=True)
    assert code == 0, err
    assert len(read_video(out).frames) == 24
    assert json.loads((tmp_path / "story.json").read_text())["model"] == "shapes-64"


# Prompts of MODEL_CARD.md's one-object table that the shipped model follows on 3 and 2 of its 3 seeds
# on an AVX512-BF16 CPU (section "Session 37"; floating-point sums, and so the frames, differ between
# CPUs, so the test asks for 2 of 3): a guard that a new model still does what this one does, not the
# issue's bar (12 of that table's 24 scenes pass).
FOLLOWED = ["a big blue square stays still", "a big green circle shrinks on a gray background"]


@pytest.mark.parametrize("prompt", FOLLOWED)
def test_shipped_model_follows_a_fixed_prompt(tmp_path, prompt):
    passed = 0
    for seed in range(3):
        out = tmp_path / f"seed{seed}.mp4"
        code, _, err = run_cli("generate", prompt, "--seconds", "2", "--seed", seed, "-o", out, "-q")
        assert code == 0, err
        code, report, err = run_cli("eval", out, "--json")
        assert code == 0, err
        passed += json.loads(report)["prompt_accuracy"] == 1.0
    assert passed >= 2, f"{prompt!r}: {passed} of 3 seeds pass phenaki eval"
