"""The README's "Train on your own videos" commands, run as written on a tiny dataset.

Only sizes change (so it runs in a minute on 2 cores): presets become `tiny`, step counts and
batches become small, clips become 5 frames with 1 given, and 2 processes stay 2. Everything
else — commands, flags, paths, the order — is the README's own text.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

from phenaki_cli.data.shapes_sampler import sample_rendered_story
from phenaki_cli.video_io import write_video

README = Path(__file__).resolve().parent.parent / "README.md"
SMALLER = [(r"--preset \w+", "--preset tiny"), (r"--steps \d+", "--steps 2"), (r"--batch-size \d+", "--batch-size 2"),
           (r"--frames \d+", "--frames 5"), (r"--prime-frames \d+", "--prime-frames 1"),
           (r"--preview-every \d+", "--preview-every 2"), (r"--workers \d+", "--workers 1")]


def walkthrough_commands() -> str:
    text = README.read_text()
    block = re.search(r"<!-- walkthrough -->\s*```sh\n(.*?)```", text, re.S)
    assert block, "README has no walkthrough block"
    script = block.group(1)
    for pattern, replacement in SMALLER:
        script = re.sub(pattern, replacement, script)
    return script


def make_videos(folder: Path) -> None:
    """Four captioned 32-px clips in the layout the README describes, plus one corrupt file."""
    folder.mkdir()
    rows = ["video,caption"]
    for i in range(4):
        sample = sample_rendered_story("train", i, scenes=(1, 1), frames_per_scene=9, size=32)
        write_video(folder / f"clip-{i + 1:04d}.mp4", sample.rendering.frames, 8)
        rows.append(f"clip-{i + 1:04d}.mp4,{sample.captions[0].text()}")
    (folder / "clip-0005.mp4").write_bytes(b"\x00" * 64)
    rows.append("clip-0005.mp4,a broken file")
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")


def test_readme_walkthrough_runs_as_written(tmp_path):
    script = walkthrough_commands()
    assert "phenaki train-tokenizer my-videos" in script and "torchrun --nproc-per-node 2" in script
    make_videos(tmp_path / "my-videos")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-12000:]
    assert "skipped 1 unreadable" in result.stderr  # the corrupt clip, counted
    for path in ["runs/recon.mp4", "runs/side-by-side.mp4", "runs/tokens/index.json", "runs/model/previews",
                 "runs/model-ddp/transformer.safetensors", "out/my-story.mp4", "out/my-story.json",
                 "models/my-model/config.json"]:
        assert (tmp_path / path).exists(), path
