import pytest

from phenaki_cli.errors import UserError
from phenaki_cli.story import parse_story


def test_script_format():
    story = parse_story("# title\n\n[3s] a red circle moves right\n[24f] the red circle turns blue  # why\n"
                        "the blue circle moves up\n[0.5s] a white square grows\n", fps=8)
    assert [(s.prompt, s.frames, s.line) for s in story.scenes] == [
        ("a red circle moves right", 24, 3), ("the red circle turns blue", 24, 4),
        ("the blue circle moves up", 16, 5), ("a white square grows", 4, 6)]
    assert story.frame_ranges() == [(0, 24), (24, 48), (48, 64), (64, 68)]


@pytest.mark.parametrize("text, message", [
    ("a\n[3x] b", r"s.txt:2: bad duration '\[3x\]'"),
    ("[2s]", r"s.txt:1: duration without a prompt"),
    ("[0f] a", r"s.txt:1: scene must last at least one frame"),
    ("# nothing\n\n", r"s.txt: no scenes"),
])
def test_script_errors_name_file_and_line(text, message):
    with pytest.raises(UserError, match=message):
        parse_story(text, fps=8, source="s.txt")
