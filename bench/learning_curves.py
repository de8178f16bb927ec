"""Learning curves: transformer designs trained for equal CPU time on the same tokens; prints JSON.

    python bench/learning_curves.py TOKENS --tokenizer TOKDIR -o train-runs/curves \
        --candidate today --candidate factorized:attention=factorized \
        --candidate rotary:positions=rotary --candidate both:attention=factorized,positions=rotary \
        --minutes 5,10,20,40 [--threads 1 --parallel 2] [--scenes 20] [-- EXTRA TRAIN ARGS]

Each candidate is a name and the transformer config fields it changes (`name:field=value,...`, on
top of `phenaki train`'s preset). It is trained by `phenaki train TOKENS ... --cpu-minutes M1,M2,...`,
which keeps a checkpoint at each mark of the training process's own CPU time (so other work on the
machine does not skew the comparison) and stops at the last. Every checkpoint is then scored by
bench/transformer_probe.py: next-step object tokens given the truth, a scene continued from the
true first frame, a scene from text. With --teacher-forced, only the figures that need no generation
(next-step object tokens at steps 1 and 3, and how much swapping two objects' verbs costs), a few
seconds a scene instead of minutes, so long runs can be followed at every mark. Runs resume
(`--resume`) and scores are cached in OUT/NAME/curve.json, so running the script again trains and scores only what is missing, and a
longer --minutes extends every curve. It writes OUT/curves.json and a plot, OUT/curves.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transformer_probe import probe  # noqa: E402  (bench/transformer_probe.py)

PANELS = (("next-step object tokens (step 1)", ("next_step_tokens", "step_1_object")),
          ("scene from the true first frame", ("scene_accuracy", "from_true_first_frame")),
          ("scene from text", ("scene_accuracy", "from_text")))
TEACHER_FORCED_PANELS = (("next-step object tokens (step 1)", ("next_step_tokens", "step_1_object")),
                         ("next-step object tokens (step 3)", ("next_step_tokens", "step_3_object")),
                         ("swapped verbs (nats)", ("verb_reading", "swapped_verbs")))
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def parse_candidate(text: str) -> tuple[str, dict]:
    """'both:attention=factorized,dim=320' → ('both', {'attention': 'factorized', 'dim': 320})."""
    name, _, fields = text.partition(":")
    overrides = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return name, overrides


def train_command(args, name: str, overrides: dict) -> list[str]:
    run = args.output / name
    config = args.output / f"{name}.json"
    config.write_text(json.dumps(overrides) + "\n")
    phenaki = Path(sys.executable).with_name("phenaki")
    return [str(phenaki), "train", str(args.tokens), "-o", str(run), "--tokenizer", str(args.tokenizer),
            "--config", str(config), "--cpu-minutes", args.minutes, "--steps", "1000000", "--save-every", "1000000",
            "--keep-last", "1000", "--preview-every", "0", "--resume", "--quiet", *args.train_args]


def train_all(args, candidates: list[tuple[str, dict]]) -> None:
    """Train the candidates, `--parallel` at a time, each on `--threads` threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    pending = list(candidates)
    running: list[tuple[str, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.parallel:
            name, overrides = pending.pop(0)
            log = open(args.output / f"{name}.log", "a")
            command = train_command(args, name, overrides)
            if (args.output / name).exists():  # resumed: the design is the run's own
                command[command.index("--config"):command.index("--config") + 2] = []
            running.append((name, subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)))
        name, process = running.pop(0)
        if process.wait():
            sys.exit(f"training {name} failed (exit {process.returncode}); see {args.output / (name + '.log')}")


def checkpoints(run: Path) -> list[tuple[int, float, Path]]:
    """(step, CPU minutes, folder) of each kept checkpoint of a run."""
    cpu = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        cpu[row["step"]] = row.get("cpu_seconds", 0.0) / 60
    found = []
    for folder in sorted((run / "checkpoints").glob("step-*")):
        step = int(folder.name.removeprefix("step-"))
        found.append((step, round(cpu.get(step, float("nan")), 2), folder))
    return found


def score_all(args, candidates: list[tuple[str, dict]]) -> dict:
    curves = {}
    for name, overrides in candidates:
        run = args.output / name
        cache_path = run / "curve.json"
        cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
        for step, minutes, folder in checkpoints(run):
            key = str(step)
            cached = cache.get(key, {})
            # a generated probe also holds every teacher-forced figure
            missing_generation = not args.teacher_forced and not cached.get("generated", True)
            if cached.get("scenes") != args.scenes or missing_generation:
                cache[key] = dict(probe(folder, args.scenes, generate=not args.teacher_forced), step=step,
                                  cpu_minutes=minutes, generated=not args.teacher_forced)
                cache[key]["model"] = str(folder)
                cache_path.write_text(json.dumps(cache, indent=1) + "\n")
        curves[name] = {"overrides": overrides, "points": sorted(cache.values(), key=lambda p: p["step"])}
    return curves


def plot(curves: dict, path: Path, panels=PANELS) -> None:
    """One panel per probe figure against CPU minutes, one line per candidate (Pillow); a point whose
    figure the probe did not give is left out."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)
    panel_w, panel_h, margin = 300, 220, 40
    sheet = Image.new("RGB", (len(panels) * (panel_w + margin) + margin, panel_h + 2 * margin + 18 * len(curves)),
                      "white")
    draw = ImageDraw.Draw(sheet)
    longest = max((p["cpu_minutes"] for c in curves.values() for p in c["points"]), default=1.0) or 1.0
    for i, (title, (group, key)) in enumerate(panels):
        left, top = margin + i * (panel_w + margin), margin
        draw.rectangle([left, top, left + panel_w, top + panel_h], outline=(0, 0, 0))
        draw.text((left, top - 16), title, fill=(0, 0, 0), font=font)
        for tick in (0.0, 0.5, 1.0):
            y = top + panel_h - tick * panel_h
            draw.line([left - 4, y, left, y], fill=(0, 0, 0))
            draw.text((left - 28, y - 6), f"{tick:.1f}", fill=(0, 0, 0), font=font)
        draw.text((left + panel_w - 110, top + panel_h + 4), f"CPU minutes (0 to {longest:.0f})", fill=(0, 0, 0),
                  font=font)
        for colour, curve in zip(COLOURS, curves.values()):
            xy = [(left + p["cpu_minutes"] / longest * panel_w, top + panel_h - p[group][key] * panel_h)
                  for p in curve["points"] if p[group].get(key) is not None]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
            for x, y in xy:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    for j, (colour, (name, curve)) in enumerate(zip(COLOURS, curves.items())):
        y = panel_h + 2 * margin + 18 * j - 10
        draw.rectangle([margin, y, margin + 12, y + 12], fill=colour)
        fields = ", ".join(f"{k}={v}" for k, v in curve["overrides"].items()) or "the preset"
        draw.text((margin + 18, y), f"{name}: {fields}", fill=(0, 0, 0), font=font)
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tokens", type=Path, help="token shards (phenaki data encode)")
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--candidate", action="append", required=True, help="NAME[:field=value,...]")
    parser.add_argument("--minutes", default="5,10,20,40", help="CPU minutes at which each candidate is scored")
    parser.add_argument("--threads", type=int, default=1, help="threads per training process")
    parser.add_argument("--parallel", type=int, default=2, help="candidates trained at once")
    parser.add_argument("--scenes", type=int, default=20, help="one-scene test stories per probe")
    parser.add_argument("--score-only", action="store_true", help="score the checkpoints there are, train nothing")
    parser.add_argument("--teacher-forced", action="store_true",
                        help="score only the figures that need no generation (fast; plots those)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.train_args = argv[split + 1:]  # after --: more `phenaki train` options, the same for every candidate
    args.output.mkdir(parents=True, exist_ok=True)
    candidates = [parse_candidate(c) for c in args.candidate]
    if not args.score_only:
        train_all(args, candidates)
    curves = score_all(args, candidates)
    (args.output / "curves.json").write_text(json.dumps(curves, indent=1) + "\n")
    panels = TEACHER_FORCED_PANELS if args.teacher_forced else PANELS
    plot(curves, args.output / "curves.png", panels)
    print(json.dumps({name: [{"cpu_minutes": p["cpu_minutes"], "step": p["step"],
                              **{key: p[group].get(key) for _, (group, key) in panels}} for p in c["points"]]
                      for name, c in curves.items()}))


if __name__ == "__main__":
    main()
