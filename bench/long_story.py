"""Long stories: the time before the first window starts, and peak memory, against the number of
scenes. Prints JSON.

    python bench/long_story.py [--model DIR] [--scenes 2,200,1000]

Each figure is one `phenaki story` process (--quiet, --steps 1 to keep the runs short; the steps
do not change what grows with the story):
- `first_window_seconds`: from the process's start to the end of the first MaskGIT step of the
  first window (parsing, the model, text embeddings and the window plan before it; it must not
  grow with the scenes);
- `peak_rss_mb`: the whole run's peak resident memory, with and without --storyboard (it must stay
  flat: windows stream to the file, and a storyboard keeps copies of four small frames a scene).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "shapes-64"
PROMPTS = ["a red circle moves right", "a blue square moves left", "a green triangle grows",
           "a yellow circle moves up"]

# run in the child: time the first sampling step, then stop (exit 0) or finish the story
CHILD = r"""
import sys, time
started = time.perf_counter()
first_only = sys.argv[1] == "first"
from phenaki_cli.pipeline import Phenaki
generate = Phenaki.generate
def timed(self, scenes, settings=None, seed=0, start_frames=None, on_step=None):
    def first_step(window, index):
        if not getattr(timed, "seen", False):
            timed.seen = True
            print(f"FIRST {time.perf_counter() - started:.3f}", file=sys.stderr, flush=True)
            if first_only:
                raise SystemExit(0)
        if on_step is not None:
            on_step(window, index)
    return generate(self, scenes, settings, seed, start_frames, first_step)
Phenaki.generate = timed
from phenaki_cli.cli import main
sys.argv = ["phenaki", "story", *sys.argv[2:]]
main()
"""


def run(script: Path, out: Path, model: Path, first_only: bool, storyboard: bool) -> tuple[float | None, float]:
    """(seconds to the first sampling step, this process's own peak RSS in MB)."""
    args = [sys.executable, "-c", CHILD, "first" if first_only else "all", str(script), "-o", str(out), "--model",
            str(model), "--steps", "1", "--quiet", "--overwrite", *(["--storyboard"] if storyboard else [])]
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen(args, stderr=log, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
        child.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read().decode(errors="replace")
    if child.returncode != 0:
        raise SystemExit(text[-2000:])
    first = next((float(line.split()[1]) for line in text.splitlines() if line.startswith("FIRST ")), None)
    return first, usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED)
    parser.add_argument("--scenes", default="2,200,1000", help="story lengths for the first-window time")
    parser.add_argument("--memory-scenes", default="2,200", help="story lengths for peak memory (smallest first)")
    args = parser.parse_args()
    rows = {"first_window_seconds": {}, "peak_rss_mb": {"quiet": {}, "storyboard": {}}}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)

        def script(n: int) -> Path:
            path = folder / f"story-{n}.txt"
            path.write_text("".join(f"[8f] {PROMPTS[i % len(PROMPTS)]}\n" for i in range(n)))
            return path

        for n in map(int, args.scenes.split(",")):
            rows["first_window_seconds"][n] = run(script(n), folder / "out.mp4", args.model, True, False)[0]
        for mode in ("quiet", "storyboard"):
            for n in map(int, args.memory_scenes.split(",")):
                rows["peak_rss_mb"][mode][n] = round(
                    run(script(n), folder / f"out-{mode}.mp4", args.model, False, mode == "storyboard")[1], 1)
    sizes = list(map(int, args.memory_scenes.split(",")))
    rows["peak_rss_ratio"] = {mode: round(rows["peak_rss_mb"][mode][sizes[-1]] / rows["peak_rss_mb"][mode][sizes[0]], 3)
                              for mode in ("quiet", "storyboard")}
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
