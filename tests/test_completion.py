"""Completion tasks: training masks per task, and complete / inpaint / edit / --image-end on a tiny model."""

import numpy as np
import pytest
import torch

from conftest import build_tiny_phenaki, run_cli
from phenaki_cli.completion import (_prompt_context, completion_frames, edit_window, fill, given_tokens,
                                    process_windows, prompt_fit, tokens_to_edit, window_spans)
from phenaki_cli.transformer.masking import TaskMix, mask_among, object_box, task_given
from phenaki_cli.video_io import read_video, write_png, write_video


def test_each_task_gives_the_right_tokens_and_masks_only_the_rest():
    generator = torch.Generator().manual_seed(0)
    t, h, w = 5, 4, 4
    for task in ("generate", "predict", "rewind", "infill", "box", "forecast"):
        for prefix in (0, 2):
            for _ in range(10):
                given = task_given((1, t, h, w), torch.tensor([prefix]), [task], generator)[0]
                per_step = given.reshape(t, -1)
                assert per_step[:prefix].all()  # a clip's own prefix is given in every task
                if task == "predict":  # a given head, then nothing
                    head = int(per_step.all(-1).sum())
                    assert per_step[:head].all() and not per_step[head:].any() and 1 <= head < t
                if task == "rewind":  # after the prefix: a gap, then a given tail to the end
                    after = per_step.all(-1)[prefix:].tolist()
                    gap = after.index(True)
                    assert gap >= 1 and all(after[gap:]) and not any(after[:gap])
                if task == "infill":
                    assert per_step[0].all() and per_step[-1].all() and not per_step.all()
                if task == "box":  # the same rectangle missing in every step after the prefix
                    holes = ~given[prefix:]
                    assert holes.any() and (holes == holes[:1]).all()
                whole = torch.tensor([task == "forecast"])
                mask = mask_among(given[None], generator, whole)[0]
                assert mask.any() and not (mask & given).any()
                if task == "forecast":  # the prefix (or the first step) given, everything after it masked
                    head = max(prefix, 1)
                    assert per_step[:head].all() and (mask.reshape(t, -1)[head:]).all()
    assert set(TaskMix(0.25, 0.25, 0.25, 0.25).draw(200, generator)) == {"predict", "rewind", "infill", "box"}
    assert "forecast" in TaskMix(forecast=0.5).draw(50, generator)
    assert "object" in TaskMix(object=0.5).draw(50, generator)
    assert set(TaskMix().draw(20, generator)) == {"generate"}


def test_the_object_task_boxes_one_objects_whole_path_and_nothing_else_is_missing():
    # background token 0; object 1 (token 5) moves right one column a step along row 1; object 2
    # (token 7) stays at rows 5-6, columns 5-6
    t, h, w = 4, 8, 8
    clip = torch.zeros(t, h, w, dtype=torch.long)
    for step in range(t):
        clip[step, 1, step:step + 2] = 5
    clip[:, 5:7, 5:7] = 7
    generator = torch.Generator().manual_seed(0)
    paths = {"moving": torch.zeros(h, w, dtype=torch.bool), "still": torch.zeros(h, w, dtype=torch.bool)}
    paths["moving"][1, 0:5] = True
    paths["still"][5:7, 5:7] = True
    seen = set()
    for _ in range(40):
        box = object_box(clip, generator)
        name = "moving" if box[1, 2] else "still"
        seen.add(name)
        rows, cols = box.any(1).nonzero()[:, 0], box.any(0).nonzero()[:, 0]
        assert (box == 0).sum() + len(rows) * len(cols) == h * w  # a rectangle
        assert (box & paths[name]).equal(paths[name])  # the whole path inside
        assert not box[paths["still" if name == "moving" else "moving"]].all()  # not the other object
        assert len(rows) <= paths[name].any(1).sum() + 2 and len(cols) <= paths[name].any(0).sum() + 2  # at most one more each side
    assert seen == {"moving", "still"}
    assert object_box(torch.zeros(t, h, w, dtype=torch.long), generator) is None
    given = task_given((2, t, h, w), torch.tensor([1, 0]), ["object", "object"], generator, clip[None].expand(2, -1, -1, -1))
    assert given[0, 0].all() and not given[0, 1:].all() and not given[1, 0].all()  # the prefix stays given
    assert (given[:, 1:] == given[:, 1:2]).all()  # the same box in every step after the prefix


def test_a_token_is_given_only_when_its_whole_tubelet_patch_is_known():
    known = np.ones((5, 32, 32), dtype=bool)
    known[3, 8, 9] = False  # one pixel of frame 3: time step 2 (frames 3-4), patch row 1, col 1
    given = given_tokens(known, patch=8, temporal_patch=2)
    assert given.shape == (3, 4, 4)
    assert not given[2, 1, 1] and int((~given).sum()) == 1


def test_windows_over_a_long_video_carry_the_last_frames():
    spans = list(window_spans(29, window=9, prime=5))
    assert spans[0] == (0, 9, 0)
    assert all((end - start - 1) % 2 == 0 and end - start <= 9 for start, end, _ in spans)
    assert all(carried == 5 for _, _, carried in spans[1:]) and spans[-1][1] == 29
    made = sum(end - start - carried for start, end, carried in spans)
    assert made == 29


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_phenaki(prompts=("a red square moves left", "a blue circle"))


def test_fill_keeps_known_pixels_exactly_for_every_mode(tiny):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    for mode, given in (("predict", 3), ("rewind", 3), ("infill", 2)):
        source, known = completion_frames(video, mode, given, 9)
        result = fill(tiny, source, known, "a red square moves left", tiny.sampling, seed=0, iterations=2)
        assert result.frames.shape == (9, 32, 32, 3)
        assert np.array_equal(result.frames[known], source[known])
        assert 0 < result.given_tokens < 1
        again = fill(tiny, source, known, "a red square moves left", tiny.sampling, seed=0, iterations=2)
        assert np.array_equal(again.frames, result.frames)  # seeds reproduce
    source, known = completion_frames(video, "infill", 2, 9)
    assert known[:2].all() and known[-2:].all() and not known[2:-2].any()
    assert np.array_equal(source[-2:], video[-2:])


def test_edit_keeps_the_carried_frames_and_processes_any_length(tiny):
    rng = np.random.default_rng(1)
    video = rng.integers(0, 256, (21, 32, 32, 3), dtype=np.uint8)
    seen = []

    def run(window, carried):
        seen.append((len(window), carried))
        out = edit_window(tiny, window, "a blue circle", carried, 0.3, tiny.sampling, seed=0)
        assert np.array_equal(out[:carried], window[:carried])
        return out

    frames = np.concatenate(list(process_windows(video, tiny.sampling, run)))
    assert frames.shape == video.shape and seen[0] == (9, 0) and all(c == 5 for _, c in seen[1:])


def test_edits_choose_the_tokens_the_new_prompt_explains_worse_than_the_source_prompt():
    fit = torch.zeros(1, 3, 2, 2)
    fit[0, 1, 0, 0] = -5.0  # hard to predict under any prompt (e.g. an object the edit does not mention)
    fit[0, 2, 1, 1] = -1.0
    source_fit = fit.clone()
    source_fit[0, 1, 0, 0] = -5.0  # ... just as hard under the source prompt: no reason to change it
    source_fit[0, 2, 1, 1] = 0.0  # the source prompt explains this one; the new prompt does not
    share = 1 / 8  # one of the 8 tokens after the carried time step
    assert torch.nonzero(tokens_to_edit(fit, 1, share)).tolist() == [[0, 1, 0, 0]]
    assert torch.nonzero(tokens_to_edit(fit, 1, share, source_fit)).tolist() == [[0, 2, 1, 1]]
    everything = tokens_to_edit(fit, 1, 1.0, source_fit)
    assert not everything[:, :1].any() and everything[:, 1:].all()  # the carried head is never chosen


@torch.inference_mode()
def test_an_edit_scores_tokens_from_the_head_and_the_prompt_alone(tiny):
    """The edit's fit sees only the carried head and the prompt: with the rest of the window visible,
    neighbours explain every token and the prompt hardly changes its likelihood."""
    transformer, size = tiny.transformer, tiny.tokenizer.config.codebook_size
    tokens = torch.randint(size, (1, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    context = _prompt_context(tiny, "a red circle moves right", 3, 2.0)
    fit = prompt_fit(transformer, tokens, 1, context, 2.0, size)
    assert fit.shape == tokens.shape and (fit <= 0).all()
    later = tokens.clone()
    later[0, 2] = (later[0, 2] + 1) % size  # other tokens after the head: no effect on time step 1's fit
    assert torch.allclose(prompt_fit(transformer, later, 1, context, 2.0, size)[0, 1], fit[0, 1])
    head = tokens.clone()
    head[0, 0] = (head[0, 0] + 1) % size  # the head is what the fit is conditioned on
    assert not torch.allclose(prompt_fit(transformer, head, 1, context, 2.0, size)[0, 1], fit[0, 1])
    other = _prompt_context(tiny, "a blue square moves up", 3, 2.0)
    assert not torch.allclose(prompt_fit(transformer, tokens, 1, other, 2.0, size), fit)


def test_complete_inpaint_edit_commands(tiny_phenaki_dir, tmp_path):
    rng = np.random.default_rng(2)
    frames = np.repeat(rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), 11, axis=0)
    write_video(tmp_path / "in", frames, 8)  # a PNG folder: lossless, so kept pixels can be compared exactly
    common = ["--model", tiny_phenaki_dir, "-q"]
    code, _, err = run_cli("complete", tmp_path / "in", "a red square moves left", "-o", tmp_path / "rewind",
                           "--mode", "rewind", "--given", "3", *common)
    assert code == 0, err
    out = read_video(tmp_path / "rewind").frames
    assert len(out) == 9 and np.array_equal(out[-3:], frames[-3:])
    code, _, err = run_cli("inpaint", tmp_path / "in", "a blue circle", "-o", tmp_path / "inpaint", "--box",
                           "8,8,24,24", *common)
    assert code == 0, err
    out = read_video(tmp_path / "inpaint").frames
    outside = np.ones((32, 32), dtype=bool)
    outside[8:24, 8:24] = False
    assert len(out) == 11 and np.array_equal(out[:, outside], frames[:, outside])
    code, _, err = run_cli("edit", tmp_path / "in", "a blue circle", "-o", tmp_path / "edit.mp4", "--strength",
                           "0.4", "--source-prompt", "a red square stays still", *common)
    assert code == 0, err
    assert len(read_video(tmp_path / "edit.mp4").frames) == 11
    code, _, err = run_cli("edit", tmp_path / "in", "a blue circle", "-o", tmp_path / "edit-first", "--strength",
                           "1", "--keep-first", *common)
    assert code == 0, err
    out = read_video(tmp_path / "edit-first").frames
    assert len(out) == 11 and np.array_equal(out[0], frames[0]) and not np.array_equal(out[1:], frames[1:])
    write_png(tmp_path / "end.png", frames[0])
    code, _, err = run_cli("generate", "a red square moves left", "-o", tmp_path / "to-end", "--image-end",
                           tmp_path / "end.png", "--seconds", "1", *common)
    assert code == 0, err
    out = read_video(tmp_path / "to-end").frames
    assert len(out) == 9 and np.array_equal(out[-1], frames[0])
    code, _, err = run_cli("generate", "a red square moves left", "-o", tmp_path / "to-end2", "--image-end",
                           tmp_path / "end.png", "--plausibility", "0.1", *common)
    assert code == 2 and "drop --storyboard, --prime-frames, --fps, --plausibility" in err


@pytest.mark.parametrize("args, message", [
    (["complete", "{video}", "p", "--given", "20"], "--given 20: predict needs 20 frames of the video, it has 11"),
    (["complete", "{video}", "p", "--mode", "infill", "--given", "5"], "leaves nothing to fill in 9 frames"),
    (["complete", "{video}", "p", "--mode", "sideways"], "--mode 'sideways': choose one of"),
    (["complete", "{video}", "p", "--frames", "21"], "one window of this model holds at most 9 frames"),
    (["inpaint", "{video}", "p", "--box", "20,20,40,40"], "must lie inside the 32×32 frame"),
    (["inpaint", "{video}", "p", "--box", "1,2,3"], "expected x0,y0,x1,y1"),
    (["inpaint", "{video}", "p", "--mask", "{small}"], "is 16×16, the model's frames are 32×32"),
    (["inpaint", "{video}", "p"], "give the region as --box"),
    (["edit", "{video}", "p", "--strength", "1.5"], "--strength must lie in (0, 1]"),
])
def test_bad_completion_input_gets_one_line(tiny_phenaki_dir, tmp_path, args, message):
    write_video(tmp_path / "v.mp4", np.zeros((11, 32, 32, 3), dtype=np.uint8), 8)
    write_png(tmp_path / "small.png", np.full((16, 16, 3), 255, dtype=np.uint8))
    args = [a.format(video=tmp_path / "v.mp4", small=tmp_path / "small.png") for a in args]
    code, _, err = run_cli(*args, "-o", tmp_path / "out.mp4", "--model", tiny_phenaki_dir)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out.mp4").exists()


def test_eval_task_scores_completion_cases(tiny_phenaki_dir):
    import json
    for task in ("rewind", "image", "inpaint", "edit"):
        code, out, err = run_cli("eval", "--generate", "1", "--task", task, "--model", tiny_phenaki_dir, "--json")
        assert code == 0, err
        summary = json.loads(out)
        assert summary["task"] == task and summary["cases"] == 1 and 0 <= summary["prompt_accuracy"] <= 1
        if task == "edit":
            assert "kept_trajectory" in summary
        else:  # completion keeps the given pixels exactly
            assert summary["kept_exact"] == 1 and summary["kept_psnr_min"] is None
    code, out, err = run_cli("eval", "--generate", "1", "--task", "rewind", "--iterations", "1", "--model",
                             tiny_phenaki_dir, "--json")
    assert code == 0 and json.loads(out)["kept_exact"] == 1, err
    code, _, err = run_cli("eval", "--generate", "1", "--task", "predict", "--iterations", "2", "--model",
                           tiny_phenaki_dir)
    assert code == 2 and "--iterations sets the re-encode rounds of --task rewind, infill or inpaint" in err
    code, _, err = run_cli("eval", "--generate", "1", "--task", "predict", "--plausibility", "0.1", "--model",
                           tiny_phenaki_dir)
    assert code == 2 and "--plausibility applies to generated stories and --task image" in err
    code, out, err = run_cli("eval", "--generate", "1", "--task", "image", "--plausibility", "0.1", "--model",
                             tiny_phenaki_dir, "--json")
    assert code == 0 and json.loads(out)["cases"] == 1, err
    code, _, err = run_cli("eval", "--task", "predict", "--model", tiny_phenaki_dir)
    assert code == 2 and "give --generate N too" in err
    code, _, err = run_cli("eval", "--generate", "1", "--task", "dance", "--model", tiny_phenaki_dir)
    assert code == 2 and "--task 'dance': choose one of" in err


def test_edit_case_follows_a_turning_object_and_prompts_the_whole_scene():
    """The edit score's path of the untouched object must follow it while its colour blends (matching
    its first colour lost it after a few frames, so such edits could never count as kept), and the edit
    prompt must still describe that object (an instruction naming only the edited one made it the least
    likely and re-sampled)."""
    from phenaki_cli.data.shapes_sampler import split_rng
    from phenaki_cli.data.shapes_world import parse_caption, render_story
    from phenaki_cli.eval.completion import _edited, _path

    caption = parse_caption("a small green square shrinks and a cyan square turns orange")
    frames = render_story([caption], 21, size=64, seed=3).frames
    path = _path(frames, "black", "cyan", "square")
    assert all(p is not None for p in path)
    assert max(abs(a[0] - b[0]) + abs(a[1] - b[1]) for a, b in zip(path, path[1:])) < 1  # it does not move
    edit = _edited(caption, split_rng("test", 0))
    assert edit.clauses[1] == caption.clauses[1] and edit.background == caption.background
    assert edit.clauses[0].action != caption.clauses[0].action
    assert (edit.clauses[0].color, edit.clauses[0].shape) == ("green", "square")
