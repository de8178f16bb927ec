import numpy as np
import pytest

from phenaki_cli.data.shapes_sampler import HELD_OUT, is_held_out, sample_clip, sample_story, split_rng
from phenaki_cli.data.shapes_world import BACKGROUNDS, COLORS, parse_caption, render_story
from phenaki_cli.errors import UserError


def positions(rendering, index=0):
    return np.array([(f[index].cx, f[index].cy, f[index].radius) for f in rendering.states])


def test_colours_are_exact_and_background():
    r = render_story(["a big purple square stays still on a gray background"], 2, seed=0)
    s = r.states[0][0]
    assert tuple(r.frames[0][int(s.cy), int(s.cx)]) == COLORS["purple"]
    assert tuple(r.frames[0][0, 0]) == (110, 110, 110)
    assert tuple(render_story(["a red circle stays still"], 1).frames[0][0, 0]) == (0, 0, 0)


@pytest.mark.parametrize("size", [64, 128])
def test_speed_is_1_5_px_per_frame_at_64_and_scales(size):
    r = render_story(["a small red circle moves right"], 8, size=size, seed=1)
    steps = np.diff(positions(r)[:, 0])
    assert np.allclose(steps, 1.5 * size / 64)


def test_motion_stops_at_the_edge():
    r = render_story(["a small red square moves left", "the red square moves left", "the red square moves left"],
                     16, seed=2)
    x = positions(r)[:, 0]
    assert x.min() == pytest.approx(5.0)  # the edge touches the border: centre = radius
    assert np.all(np.diff(x) <= 0)


def test_grow_and_shrink_limits():
    grow = positions(render_story(["a big blue circle grows"], 30, seed=3))[:, 2]
    assert np.allclose(np.diff(grow)[:10], 0.4) and grow.max() == pytest.approx(16.0)
    shrink = positions(render_story(["a small blue circle shrinks"], 30, seed=3))[:, 2]
    assert np.allclose(np.diff(shrink)[:3], -0.4) and shrink.min() == pytest.approx(3.0)


def test_colour_blends_over_four_frames_then_holds():
    r = render_story(["a red circle stays still", "the red circle turns blue"], [2, 8], seed=4)
    colours = np.array([f[0].rgb for f in r.states[2:]])
    red, blue = np.array(COLORS["red"]), np.array(COLORS["blue"])
    for j in range(5):
        assert np.allclose(colours[j], red + (blue - red) * j / 4)
    assert np.allclose(colours[5:], blue)


def test_state_carries_across_scenes_and_new_objects_appear():
    r = render_story(["a red circle moves right", "the red circle moves down and a white square stays still"],
                     [10, 10], seed=5)
    p = positions(r)
    assert p[10, 0] == pytest.approx(p[9, 0] + 1.5) and p[10, 1] == pytest.approx(p[9, 1])  # no jump at the cut
    assert p[19, 1] == pytest.approx(min(p[10, 1] + 9 * 1.5, 64 - 7))  # or stopped by the bottom edge
    assert len(r.states[9]) == 1 and len(r.states[10]) == 2


def test_story_references_are_checked():
    with pytest.raises(UserError, match="'the blue circle' refers to no object"):
        render_story(["a red circle moves right", "the blue circle grows"], 4)
    with pytest.raises(UserError, match="already exists; refer to it with 'the'"):
        render_story(["a red circle moves right", "a red circle grows"], 4)


def test_caption_grammar_round_trips():
    for text in ["a red circle moves right", "a big blue square grows on a gray background",
                 "the red circle turns yellow", "a small green triangle moves up and a white square stays still"]:
        assert parse_caption(text).text() == text


@pytest.mark.parametrize("text, message", [
    ("a purpel circle moves left", "word 2 'purpel'.*expected a size or colour"),
    ("a red circle jumps", "word 4 'jumps'.*expected a verb"),
    ("a red circle moves", "ends early; expected a direction"),
    ("a red circle grows on a white background", "word 7 'white'.*expected a background"),
    ("a red circle grows and a red circle shrinks", "may not share both colour and shape"),
    ("one red circle grows", "word 1 'one'.*expected 'a' or 'the'"),
])
def test_caption_errors_name_word_and_position(text, message):
    with pytest.raises(UserError, match=message):
        parse_caption(text)


def test_sampler_covers_the_grammar_and_respects_held_out_split():
    rng = split_rng("train", 0)
    clauses = [c for _ in range(300) for caption in sample_story(rng, 4) for c in caption.clauses]
    assert {c.verb for c in clauses} == {"moves", "stays", "grows", "shrinks", "turns"}
    assert {c.article for c in clauses} == {"a", "the"} and {c.size for c in clauses} == {"small", None, "big"}
    assert not any(is_held_out(c) for c in clauses)
    held = [c for _ in range(50) for caption in sample_story(rng, 3, split="heldout") for c in caption.clauses]
    assert any(is_held_out(c) for c in held) and len(HELD_OUT) >= 6


def test_continuation_clips_start_with_the_previous_scene():
    clip = sample_clip("train", 7, 17, prime_frames=5, continuation_share=1.0)
    assert clip.frames.shape == (17, 64, 64, 3) and clip.prime_frames == 5
    assert parse_caption(clip.caption).clauses  # the caption is the new scene's
    again = sample_clip("train", 7, 17, prime_frames=5, continuation_share=1.0)
    assert np.array_equal(clip.frames, again.frames)  # deterministic by sample number


def test_training_captions_on_black_both_name_it_and_leave_it_unsaid():
    # A model that never reads "on a black background" draws gray for it (the grammar allows both).
    clips = [sample_clip("train", i, 3, size=32, prime_frames=1) for i in range(60)]
    on_black = [c.caption for c in clips if parse_caption(c.caption).background == "black"]
    assert any(t.endswith(" on a black background") for t in on_black)
    assert any(not t.endswith(" background") for t in on_black)
    for clip in clips:  # every wording still says the background its frames show
        background = parse_caption(clip.caption).background
        assert tuple(np.median(clip.frames[-1].reshape(-1, 3), 0)) == BACKGROUNDS[background]
