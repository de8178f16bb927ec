import subprocess

import numpy as np
import pytest

from phenaki_cli.data.shapes_world import COLORS
from phenaki_cli.errors import UserError
from phenaki_cli.video_io import ffmpeg_exe, read_video, resize_center_crop, write_png, write_video


def flat_colour_frames(size=64):
    colours = list(COLORS.values()) + [(0, 0, 0), (110, 110, 110)]
    frames = np.zeros((len(colours), size, size, 3), np.uint8)
    for i, c in enumerate(colours):
        frames[i] = c
    return frames


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".gif", ""])
def test_colours_round_trip(tmp_path, suffix):
    frames = flat_colour_frames()
    path = tmp_path / f"v{suffix}"
    write_video(path, frames, fps=8)
    back = read_video(path).frames
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 2.0
    # channel order: a red frame reads back red (the public code read mp4 as BGR)
    red = back[0].reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[2] < 60


def test_mp4_is_h264_yuv420p_that_plays(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, np.random.default_rng(0).integers(0, 255, (9, 33, 47, 3), dtype=np.uint8), fps=8)
    probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    assert "h264" in probe and "yuv420p" in probe
    assert "48x34" in probe  # 47×33 frames are padded to even sizes
    decode = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True,
                            text=True)
    assert decode.returncode == 0 and decode.stderr == ""


def test_single_image_and_png(tmp_path):
    image = flat_colour_frames()[2]
    write_png(tmp_path / "a.png", image)
    video = read_video(tmp_path / "a.png")
    assert video.frames.shape == (1, 64, 64, 3) and np.array_equal(video.frames[0], image)


def test_fps_resampling_and_resize_policy(tmp_path):
    path = tmp_path / "v.mp4"
    frames = np.zeros((16, 48, 96, 3), np.uint8)
    frames[:, :, 24:72] = (220, 40, 40)  # a red centre band; the crop keeps exactly it
    write_video(path, frames, fps=8)
    video = read_video(path, fps=4, size=32)
    assert video.fps == 4 and len(video.frames) == 8
    assert video.frames.shape[1:] == (32, 32, 3)
    assert np.abs(video.frames[:, 4:-4, 4:-4].astype(int) - (220, 40, 40)).mean() < 6
    assert resize_center_crop(frames[:1], 48).shape == (1, 48, 48, 3)


def test_unreadable_inputs_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        read_video(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(UserError, match="notes.mp4: not a readable video"):
        read_video(text)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        read_video(tmp_path / "empty")


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(UserError, match="unsupported output format"):
        write_video(tmp_path / "v.xyz", flat_colour_frames(), fps=8)
    assert list(tmp_path.iterdir()) == []


def test_a_swallowed_ctrl_c_still_stops_the_writer(tmp_path, monkeypatch):
    """Python drops a KeyboardInterrupt raised in subprocess's fork hooks (while ffmpeg starts);
    the remembered interrupt stops the next write, and nothing is left behind."""
    import numpy as np
    import pytest

    from phenaki_cli import runtime
    from phenaki_cli.video_io import VideoWriter

    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "out.mp4", fps=8) as writer:
            writer.write(np.zeros((2, 16, 16, 3), dtype=np.uint8))
            monkeypatch.setattr(runtime, "_interrupted", True)  # as if the handler ran, its exception lost
            writer.write(np.zeros((2, 16, 16, 3), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []
