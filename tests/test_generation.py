"""MaskGIT, sampling and the story pipeline, on tiny random-weight models."""

import math
import tracemalloc

import numpy as np
import pytest
import torch
from conftest import build_tiny_phenaki

from phenaki_cli.config import TOKENIZER_PRESETS, TRANSFORMER_PRESETS, SamplingConfig
from phenaki_cli.errors import UserError
from phenaki_cli.pipeline import Phenaki, check_compatible, plan_windows
from phenaki_cli.sampling import guided_logits, maskgit_decode, prepare_guided
from phenaki_cli.transformer import MaskGIT
from phenaki_cli.transformer.masking import (changed_since_previous_step, corrupt_visible, masked_token_loss,
                                            random_mask)


def test_plan_windows_cover_every_scene_exactly():
    plan = plan_windows([16, 16, 3], window=17, prime=5, temporal_patch=2)
    assert [(w.scene, w.prime, w.frames, w.keep) for w in plan] == [
        (0, 0, 17, 16),  # first window: no prefix, 17 frames decoded, 16 kept
        (1, 5, 17, 12), (1, 5, 9, 4),  # a scene longer than a window slides within it
        (2, 5, 9, 3)]  # 3 new frames take 2 tubelets; the extra frame is dropped
    for scene, n in enumerate([16, 16, 3]):
        assert sum(w.keep for w in plan if w.scene == scene) == n
    # continuing from a single image: the image is the 1-frame prefix
    assert [(w.prime, w.frames, w.keep) for w in plan_windows([20], 17, 5, 2, history=1)] == [(1, 17, 16), (5, 9, 4)]
    # fewer frames made so far than K: prime with the largest valid count
    assert plan_windows([2, 4], 17, 5, 2)[1].prime == 1


def test_story_shapes_and_same_seed_same_frames():
    model = build_tiny_phenaki()
    scenes = [("a red square", 16), ("a blue circle", 10), ("a red square", 3)]
    first = [f for _, f in model.generate(scenes, seed=7)]
    video = np.concatenate(first)
    assert video.shape == (29, 32, 32, 3) and video.dtype == np.uint8
    again = np.concatenate([f for _, f in model.generate(scenes, seed=7)])
    other = np.concatenate([f for _, f in model.generate(scenes, seed=8)])
    assert np.array_equal(video, again)
    assert not np.array_equal(video, other)


def test_prime_tokens_are_never_changed_and_everything_is_filled():
    model = build_tiny_phenaki()
    transformer = model.transformer
    torch.manual_seed(1)
    tokens = torch.full((2, 5, 4, 4), transformer.config.mask_id)
    prefix = torch.randint(0, 256, (2, 3, 4, 4))
    tokens[:, :3] = prefix
    text, mask = model.text_encoder.embed_batch(["a red square", "a blue circle"])
    context = prepare_guided(transformer, text, mask, 5, guidance=3.0)
    out = maskgit_decode(transformer, tokens, context, steps=6, guidance=3.0, temperature=4.5, codebook_size=256,
                         generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :3], prefix)
    assert int(out.max()) < 256 and int(out.min()) >= 0


class CountingMaskGIT(MaskGIT):
    """Records how many [MASK] tokens each decoding step sees."""

    seen: list

    def forward(self, tokens, context):
        self.seen.append(int((tokens[:1] == self.config.mask_id).sum()))
        return super().forward(tokens, context)


def test_decoding_reveals_tokens_on_the_cosine_schedule():
    torch.manual_seed(0)
    model = CountingMaskGIT(TRANSFORMER_PRESETS["tiny"]).eval()
    model.seen = []
    n, steps = 5 * 16, 8
    text = torch.randn(1, 3, 32)
    context = prepare_guided(model, text, torch.ones(1, 3, dtype=torch.bool), 5, guidance=1.0)
    tokens = torch.full((1, 5, 4, 4), model.config.mask_id)
    maskgit_decode(model, tokens, context, steps=steps, guidance=1.0, temperature=1.0, codebook_size=256)
    expected = [n]
    for step in range(steps - 1):
        remaining = expected[-1]
        expected.append(max(1, min(remaining - 1, math.floor(n * math.cos(math.pi / 2 * (step + 1) / steps)))))
    assert model.seen == expected


def test_guidance_zero_is_unconditional_and_one_is_conditional():
    model = build_tiny_phenaki()
    transformer = model.transformer
    tokens = torch.randint(0, 257, (1, 5, 4, 4))
    text, mask = model.text_encoder.embed_batch(["a red square"])
    cond = transformer(tokens, transformer.prepare(text, mask, 5))
    uncond = transformer(tokens, transformer.prepare(text, mask, 5, drop=torch.tensor([True])))
    assert not torch.allclose(cond, uncond)
    for scale, want in ((0.0, uncond), (1.0, cond)):
        got = guided_logits(transformer, tokens, prepare_guided(transformer, text, mask, 5, scale), scale, 256)
        torch.testing.assert_close(got, want)
    mixed = guided_logits(transformer, tokens, prepare_guided(transformer, text, mask, 5, 3.0), 3.0, 256)
    torch.testing.assert_close(mixed, uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-4)
    # unconditional sampling ignores the prompt entirely
    a = [f for _, f in model.generate([("a red square", 9)], model.settings(guidance=0.0), seed=3)]
    b = [f for _, f in model.generate([("a blue circle", 9)], model.settings(guidance=0.0), seed=3)]
    assert np.array_equal(a[0], b[0])


def test_plausibility_lets_guidance_draw_only_codes_the_conditional_model_allows():
    model = build_tiny_phenaki()
    transformer = model.transformer
    tokens = torch.randint(0, 257, (1, 5, 4, 4), generator=torch.Generator().manual_seed(0))
    text, mask = model.text_encoder.embed_batch(["a red square"])
    context = prepare_guided(transformer, text, mask, 5, 3.0)
    plain = guided_logits(transformer, tokens, context, 3.0, 256)
    cond = transformer(tokens, transformer.prepare(text, mask, 5))[..., :256].float()
    p = torch.softmax(cond, -1)
    for alpha in (0.1, 0.5):
        got = guided_logits(transformer, tokens, context, 3.0, 256, plausibility=alpha)
        allowed = p >= alpha * p.max(-1, keepdim=True).values
        assert torch.isinf(got[..., :256][~allowed]).all() and (got[..., 256:] == -math.inf).all()
        torch.testing.assert_close(got[..., :256][allowed], plain[..., :256][allowed])
        assert 0 < allowed.sum(-1).min() and allowed.sum(-1).max() < 256  # the top code always stays
    # the first window (nothing given) is drawn as without the constraint; later windows are not
    scenes = [("a red square", 9), ("a blue circle", 8)]
    plain_video = [f for _, f in model.generate(scenes, model.settings(), seed=3)]
    strict_video = [f for _, f in model.generate(scenes, model.settings(plausibility=0.9), seed=3)]
    assert np.array_equal(plain_video[0], strict_video[0]) and not np.array_equal(plain_video[1], strict_video[1])
    for bad in (1.0, -0.1):
        with pytest.raises(UserError, match="plausibility must lie in"):
            model.settings(plausibility=bad)


def test_training_mask_never_touches_the_prefix():
    prefix = torch.tensor([0, 2, 4, 3])
    for seed in range(20):
        mask = random_mask((4, 5, 4, 4), prefix, torch.Generator().manual_seed(seed))
        for i, p in enumerate(prefix.tolist()):
            assert not mask[i, :p].any() and mask[i, p:].any()


def test_corruption_gives_visible_tokens_a_neighbours_and_keeps_the_targets():
    tokens = torch.randint(0, 10_000, (4, 3, 6, 6))  # distinct ids: every change shows where it came from
    masked = random_mask(tuple(tokens.shape), torch.tensor([1, 0, 2, 1]), torch.Generator().manual_seed(0))
    seen = corrupt_visible(tokens, masked, 0.5, torch.Generator().manual_seed(1))
    changed = seen != tokens
    assert not changed[masked].any()
    assert 0.25 < changed[~masked].float().mean() < 0.5  # a share, less the neighbours past the border
    padded = torch.nn.functional.pad(tokens, (1, 1, 1, 1), value=-1)
    neighbours = torch.stack([padded[..., :-2, 1:-1], padded[..., 2:, 1:-1], padded[..., 1:-1, :-2],
                              padded[..., 1:-1, 2:]])  # up, down, left, right, in the same time step
    assert (neighbours == seen).any(0)[changed].all()
    # the loss with corruption masks the same tokens and predicts the same (true) targets
    model = build_tiny_phenaki()
    small = tokens[:, :, :4, :4] % 256
    text, text_mask = model.text_encoder.embed_batch(["a red square"] * 4)
    prefix = torch.tensor([1, 0, 2, 1])
    runs = [masked_token_loss(model.transformer, small, text, text_mask, prefix, 0.0,
                              torch.Generator().manual_seed(2), corrupt=share) for share in (0.0, 0.0, 0.9)]
    assert runs[0][0] == runs[1][0] and runs[2][0] != runs[0][0]
    assert runs[0][1]["masked"] == runs[2][1]["masked"]


def test_change_weight_weighs_the_tokens_that_changed_since_the_previous_step():
    tokens = torch.tensor([[[[1, 2]], [[1, 3]], [[4, 3]]]])  # (1, 3, 1, 2): one token changes per step
    assert changed_since_previous_step(tokens).tolist() == [[[[False, False]], [[False, True]], [[True, False]]]]
    model = build_tiny_phenaki()
    tokens = torch.randint(0, 256, (3, 4, 4, 4))
    tokens[:, 2] = tokens[:, 1]  # a still step among changing ones
    text, text_mask = model.text_encoder.embed_batch(["a red square"] * 3)
    prefix = torch.tensor([0, 1, 0])

    def loss(weight, grids=tokens):
        return masked_token_loss(model.transformer, grids, text, text_mask, prefix, 0.0,
                                 torch.Generator().manual_seed(3), change_weight=weight)[0]

    still = tokens[:, :1].expand_as(tokens).contiguous()  # nothing changes: every weight gives the plain loss
    assert torch.allclose(loss(1.0, still), loss(4.0, still))

    # the same masks: the weighted mean moves from the plain mean toward the changed tokens' mean
    plain, heavy, heavier = loss(1.0), loss(4.0), loss(1000.0)
    assert torch.isfinite(heavy) and heavy != plain
    assert abs(heavier - loss(2000.0)) < abs(heavy - heavier)  # converges on the changed tokens alone


def test_loss_gradients_reach_text_cross_attention():
    model = build_tiny_phenaki()
    transformer = model.transformer.train()
    tokens = torch.randint(0, 256, (3, 5, 4, 4))
    text, mask = model.text_encoder.embed_batch(["a red square", "a blue circle", "a red square"])
    loss, stats = masked_token_loss(transformer, tokens, text, mask, torch.tensor([0, 3, 1]), text_drop=0.0)
    loss.backward()
    assert math.isfinite(loss.item()) and stats["masked"] > 0
    assert transformer.blocks[0].cross.to_kv.weight.grad.abs().sum() > 0


def test_load_time_checks_say_what_does_not_match():
    tok, tr, sampling = TOKENIZER_PRESETS["tiny"], TRANSFORMER_PRESETS["tiny"], SamplingConfig(window_frames=9)
    from dataclasses import replace
    with pytest.raises(UserError, match="vocab_size 100 does not cover the tokenizer's codebook of 256"):
        check_compatible(tok, replace(tr, vocab_size=100), sampling, 32, "m")
    with pytest.raises(UserError, match="grid_size 8 but the tokenizer makes 4×4"):
        check_compatible(tok, replace(tr, grid_size=8), sampling, 32, "m")
    with pytest.raises(UserError, match="17 frames is 9 token time steps, but the transformer has positions for 5"):
        check_compatible(tok, tr, SamplingConfig(window_frames=17), 32, "m")
    with pytest.raises(UserError, match="dim 768, the transformer expects 32"):
        check_compatible(tok, tr, sampling, 768, "m")
    with pytest.raises(UserError, match="prime-frames must be 1 \\+ 2·n, got 4"):
        check_compatible(tok, tr, SamplingConfig(window_frames=9, prime_frames=4), 32, "m")


def test_model_directory_round_trip_and_mismatch(tiny_phenaki_dir, tmp_path):
    model = Phenaki.from_pretrained(tiny_phenaki_dir)
    assert model.transformer.config == TRANSFORMER_PRESETS["tiny"]
    import json
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(tiny_phenaki_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["transformer"]["vocab_size"] = 128
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="vocab_size 128 does not cover"):
        Phenaki.from_pretrained(broken)


def test_memory_stays_flat_as_the_story_grows():
    """Only one window's frames live at a time: a 12-scene story peaks like a 2-scene one."""
    model = build_tiny_phenaki(steps=2)

    def peak(scenes: int) -> int:
        tracemalloc.start()
        total = 0
        for _, frames in model.generate([("a red square", 16)] * scenes, seed=0):
            total += len(frames)  # a consumer that writes frames out and keeps nothing
        _, peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert total == 16 * scenes
        return peak_bytes

    peak(1)  # warm caches
    two, twelve = peak(2), peak(12)
    assert twelve < 1.3 * two + 64 * 1024, (two, twelve)


def test_a_tiny_model_trained_here_follows_its_prompt(tmp_path):
    """Two-prompt toy world: after a short training run, each prompt generates its own video."""
    from phenaki_cli.data.shapes_world import parse_caption, render_story
    from phenaki_cli.modeldir import save_model_dir
    from phenaki_cli.data.tokens import TokenExamples
    from phenaki_cli.train.transformer import TransformerTrainSettings, train_transformer
    from phenaki_cli.video_io import frames_to_tensor

    prompts = ["a big red square stays still", "a big blue circle stays still"]
    base = build_tiny_phenaki(prompts)
    tokenizer = base.tokenizer
    save_model_dir(tmp_path / "tok", {"tokenizer": (tokenizer.config, tokenizer)})
    with torch.inference_mode():
        grids = [tokenizer.encode(frames_to_tensor(render_story([parse_caption(p)], 9, size=32, seed=0).frames)[None])[0]
                 for p in prompts]
    examples = TokenExamples(torch.stack(grids).numpy().astype(np.int16), prompts, np.zeros(2, dtype=np.int64))
    settings = TransformerTrainSettings(steps=300, batch_size=8, lr=3e-3, warmup_steps=10, save_every=1000,
                                        image_share=0.0)
    train_transformer(tmp_path / "model", tmp_path / "tok", base.text_encoder, examples, base.transformer.config,
                      settings, base.sampling)
    model = Phenaki.from_pretrained(tmp_path / "model")
    for prompt, grid in zip(prompts, grids):
        other = grids[1 - prompts.index(prompt)]
        for seed in range(2):
            settings = model.settings(steps=6, guidance=2.0, temperature=1.0)
            frames = np.concatenate([f for _, f in model.generate([(prompt, 9)], settings, seed=seed)])
            with torch.inference_mode():
                want = tokenizer.decode(grid[None])[0].permute(0, 2, 3, 1).numpy() * 255
                not_want = tokenizer.decode(other[None])[0].permute(0, 2, 3, 1).numpy() * 255
            error, wrong = np.abs(frames - want).mean(), np.abs(frames - not_want).mean()
            assert error < 0.4 * wrong, (prompt, seed, error, wrong)


def test_story_command_writes_video_sidecar_and_storyboard(tiny_phenaki_dir, tmp_path):
    import json

    from conftest import run_cli

    from phenaki_cli.video_io import read_video

    script = tmp_path / "story.txt"
    script.write_text("# two scenes\na red square moves left\n[10f] a blue circle grows on a gray background\n")
    out = tmp_path / "story.mp4"
    code, _, err = run_cli("story", script, "-o", out, "--model", tiny_phenaki_dir, "--storyboard", "--seed", "3",
                           "--quiet")
    assert code == 0, err
    video = read_video(out)
    sidecar = json.loads((tmp_path / "story.json").read_text())
    assert len(video.frames) == 26 == sidecar["frames"]
    assert [(s["start"], s["end"], s["line"]) for s in sidecar["scenes"]] == [(0, 16, 2), (16, 26, 3)]
    assert sidecar["seed"] == 3 and sidecar["sampling"]["prime_frames"] == 5 and "seconds" in sidecar["timings"]
    assert (tmp_path / "story.storyboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # refuses to overwrite; --from continues the video it is given (which heads the output)
    code, _, err = run_cli("story", script, "-o", out, "--model", tiny_phenaki_dir)
    assert code == 2 and "already exists" in err
    longer = tmp_path / "longer.mp4"
    code, _, err = run_cli("story", script, "-o", longer, "--model", tiny_phenaki_dir, "--from", out, "-q")
    assert code == 0, err
    assert len(read_video(longer).frames) == 52
    assert json.loads((tmp_path / "longer.json").read_text())["scenes"][0]["start"] == 26


def test_generate_command_image_to_video_and_warnings(tiny_phenaki_dir, tmp_path):
    import json

    from conftest import run_cli

    from phenaki_cli.video_io import read_video, write_video

    start = tmp_path / "start.png"
    first = np.zeros((1, 32, 32, 3), np.uint8)
    first[0, 8:20, 8:20] = (230, 40, 40)
    write_video(start, first, 8)
    out = tmp_path / "clip.gif"
    code, stdout, err = run_cli("generate", "a red square flies to the moon", "-o", out, "--model", tiny_phenaki_dir,
                                "--image", start, "--seconds", "1", "--json")
    assert code == 0, err
    assert "warning: prompt: the text encoder does not know 'flies', 'to', 'the', 'moon'" in " ".join(err.split())
    assert json.loads(stdout)["frames"] == 9
    frames = read_video(out).frames
    assert len(frames) == 9 and np.abs(frames[0].astype(int) - first[0]).mean() < 3  # the start image heads it


@pytest.mark.parametrize("args, message", [
    (["story", "{script}", "--steps", "0"], "--steps must be a number >= 1"),
    (["story", "{script}", "--prime-frames", "4"], "prime-frames must be 1 + 2·n, got 4"),
    (["story", "{bad}"], "bad.txt:2: bad duration '[3x]'"),
    (["story", "{script}", "--from", "{missing}"], "missing.mp4"),
    (["generate", "   "], "the prompt is empty"),
])
def test_story_and_generate_errors_are_one_line(tiny_phenaki_dir, tmp_path, args, message):
    from conftest import run_cli

    script, bad = tmp_path / "ok.txt", tmp_path / "bad.txt"
    script.write_text("a red square moves left\n")
    bad.write_text("a red square moves left\n[3x] a blue circle grows\n")
    args = [a.format(script=script, bad=bad, missing=tmp_path / "missing.mp4") for a in args]
    out = tmp_path / "out.mp4"
    code, _, err = run_cli(*args, "-o", out, "--model", tiny_phenaki_dir)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_transformer_training_resumes_exactly_with_accumulation_and_ema(tmp_path):
    from phenaki_cli.modeldir import save_model_dir
    from phenaki_cli.train.checkpoint import METRICS_FILE
    from phenaki_cli.data.tokens import TokenExamples
    from phenaki_cli.train.transformer import TransformerTrainSettings, train_transformer

    base = build_tiny_phenaki()
    save_model_dir(tmp_path / "tok", {"tokenizer": (base.tokenizer.config, base.tokenizer)})
    rng = np.random.default_rng(0)
    examples = TokenExamples(rng.integers(0, 256, (12, 5, 4, 4)).astype(np.int16),
                             ["a red square", "a blue circle"] * 6, np.array([0, 3] * 6))
    settings = TransformerTrainSettings(steps=8, batch_size=2, lr=1e-3, warmup_steps=2, save_every=4,
                                        image_share=0.3, crop_share=0.3, accumulate=2, ema_decay=0.9)

    def run(out, on_step=None, resume=False):
        return train_transformer(out, tmp_path / "tok", base.text_encoder, examples, base.transformer.config,
                                 settings, base.sampling, resume=resume, on_step=on_step)

    run(tmp_path / "straight")

    def interrupt(step, row):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split", on_step=interrupt)
    run(tmp_path / "split", resume=True)
    import json
    losses = [[json.loads(line)["loss"] for line in (tmp_path / name / METRICS_FILE).read_text().splitlines()]
              for name in ("straight", "split")]
    assert len(losses[0]) == 8 and losses[0] == losses[1]
    a, b = Phenaki.from_pretrained(tmp_path / "straight"), Phenaki.from_pretrained(tmp_path / "split")
    for (name, x), (_, y) in zip(a.transformer.state_dict().items(), b.transformer.state_dict().items()):
        assert torch.equal(x, y), name


def test_eval_generate_and_info_on_a_full_model(tiny_phenaki_dir):
    import json

    from conftest import run_cli

    code, stdout, err = run_cli("eval", "--generate", "2", "--scenes", "2", "--model", tiny_phenaki_dir, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["stories"] == 2 and summary["clauses"] >= 2 and 0 <= summary["prompt_accuracy"] <= 1
    code, stdout, err = run_cli("info", "--model", tiny_phenaki_dir, "--json")
    assert code == 0, err
    details = json.loads(stdout)
    assert details["transformer"]["vocab_size"] == 256 and details["sampling"]["prime_frames"] == 5
    assert details["text_encoder"]["dim"] == 32


def test_tokenizer_ceiling_cuts_windows_like_generation(monkeypatch, tiny_phenaki_dir):
    """With a lossless codec the ceiling gives back the true frames exactly (windows, primes and
    padding line up), and the analyser scores them perfectly; `--ceiling` runs on a real model."""
    import json

    from conftest import run_cli
    from phenaki_cli import codec
    from phenaki_cli.data.shapes_sampler import sample_rendered_story
    from phenaki_cli.eval.analyser import analyse
    from phenaki_cli.eval.generated import tokenizer_ceiling

    model = build_tiny_phenaki()
    story = sample_rendered_story("test", 0, scenes=(3, 3), frames_per_scene=16, size=32)
    monkeypatch.setattr(codec, "encode_frames", lambda tokenizer, frames, precision="fp32": frames)
    monkeypatch.setattr(codec, "decode_grid", lambda tokenizer, grid, precision="fp32": grid)
    frames = tokenizer_ceiling(model, story.rendering.frames, [16, 16, 16], model.settings())
    assert np.array_equal(frames, story.rendering.frames)
    report = analyse(frames, story.captions, story.rendering.scene_ranges)
    assert report.prompt_accuracy == 1.0 and report.continuity == 1.0
    monkeypatch.undo()
    code, stdout, err = run_cli("eval", "--generate", "1", "--scenes", "2", "--ceiling", "--json",
                                "--model", tiny_phenaki_dir)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["videos"] == "tokenizer ceiling" and 0 < summary["psnr_worst"] <= summary["psnr"]
    code, _, err = run_cli("eval", "--ceiling", "--model", tiny_phenaki_dir)
    assert code == 2 and "--ceiling scores the --generate N stories" in err


def test_ctrl_c_leaves_no_partial_output(tiny_phenaki_dir, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "long.txt"
    script.write_text("a red square moves left\n" * 5000)
    out = tmp_path / "long.mp4"
    process = subprocess.Popen([sys.executable, "-m", "phenaki_cli", "story", str(script), "-o", str(out), "--model",
                                str(tiny_phenaki_dir), "--steps", "12", "--storyboard", "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list(tmp_path.glob(".long*")) and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)  # until the video is being written
        assert process.poll() is None, process.communicate()
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:  # a story of 5,000 scenes must not outlive a failed test
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.txt"]


def test_unknown_option_is_a_usage_error_not_a_traceback():
    from conftest import run_cli

    code, _, err = run_cli("story", "--bogus")
    assert code == 2 and "No such option" in err and "Traceback" not in err


def test_text_encoder_by_path_is_checked_against_the_transformer(tiny_phenaki_dir, tmp_path):
    from conftest import run_cli

    from phenaki_cli.text import TextEncoder, build_text_encoder

    same = TextEncoder.load(tiny_phenaki_dir / "text_encoder")
    assert same.embed("a red square moves left").shape[1] == 32
    wider = tmp_path / "t5-wide"
    build_text_encoder(["a red square"], d_model=48, layers=1, heads=2).save(wider)
    code, _, err = run_cli("generate", "a red square", "-o", tmp_path / "x.mp4", "--model", tiny_phenaki_dir,
                           "--text-encoder", wider)
    assert code == 2 and "text encoder's embeddings have dim 48, the transformer expects 32" in err, err
    code, _, err = run_cli("generate", "a red square", "-o", tmp_path / "x.mp4", "--model", tiny_phenaki_dir,
                           "--text-encoder", tmp_path / "nowhere")
    assert code == 2 and "text encoder directory not found" in err, err
    code, _, err = run_cli("generate", "a red square", "-o", tmp_path / "x.mp4", "--model", tiny_phenaki_dir,
                           "--text-encoder", tiny_phenaki_dir / "text_encoder", "-q")
    assert code == 0, err


def test_train_resume_and_export_commands(tiny_phenaki_dir, tmp_path):
    import json

    from conftest import run_cli

    run = tmp_path / "run"
    args = ["train", "shapes", "-o", run, "--clips", "16", "--frames", "9", "--batch-size", "2", "--save-every", "3",
            "-q"]
    code, _, err = run_cli(*args, "--steps", "6", "--until-step", "3", "--tokenizer", tiny_phenaki_dir,
                           "--preset", "tiny")
    assert code == 0, err
    assert (tmp_path / "run.tokens" / "index.json").is_file()
    assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    code, _, err = run_cli(*args, "--resume")  # the rest of the run: its own --steps 6
    assert code == 0, err
    assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    code, _, err = run_cli(*args, "--steps", "6", "--tokenizer", tiny_phenaki_dir)
    assert code == 2 and "already exists (pass --resume" in err
    code, _, err = run_cli("export", run, "-o", tmp_path / "shipped", "--guidance", "2", "-q")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "shipped").iterdir()) == [
        "config.json", "text_encoder", "tokenizer.safetensors", "transformer.safetensors"]
    sampling = json.loads((tmp_path / "shipped" / "config.json").read_text())["sampling"]
    source = json.loads((run / "config.json").read_text())["sampling"]
    assert sampling == {**source, "guidance": 2.0}  # the one default set, the others kept
    code, _, err = run_cli("export", run, "-o", tmp_path / "bad", "--guidance", "-1", "-q")
    assert code == 2 and "--guidance must be a number >= 0, got -1" in err and not (tmp_path / "bad").exists()
    code, _, err = run_cli("generate", "a red circle moves left", "-o", tmp_path / "g.mp4", "--model",
                           tmp_path / "shipped", "-q")
    assert code == 0, err
