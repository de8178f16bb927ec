"""The `data` commands: Shapes World datasets (`shapes`), exact renders (`render`), token shards (`encode`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from phenaki_cli.cli.common import (CountLog, DeviceOption, OverwriteOption, QuietOption, ThreadsOption, WorkersOption,
                                    number, say, scene_bounds, setup, work_progress)
from phenaki_cli.errors import UserError


def data_shapes(count: int = typer.Option(..., "-n", help="Number of videos."),
                output: Path = typer.Option(..., "--output", "-o", help="Dataset folder to write."),
                split: str = typer.Option("train", help="train | val | test | heldout"),
                scenes: str = typer.Option("1", help="Scenes per video: N or MIN-MAX (e.g. 2-6)."),
                frames_per_scene: int = typer.Option(16), size: int = typer.Option(64), fps: float = typer.Option(8.0, callback=number("--fps", 0, 240, above=True)),
                overwrite: bool = OverwriteOption, quiet: bool = QuietOption):
    """Write a Shapes World dataset: mp4 files + captions.jsonl (the format of user datasets)."""
    from phenaki_cli.data.datasets import write_shapes_dataset
    from phenaki_cli.data.shapes_sampler import SPLIT_CODES
    from phenaki_cli.files import check_output

    check_output(output, overwrite)
    if split not in SPLIT_CODES:
        raise UserError(f"--split {split!r}: choose one of {', '.join(SPLIT_CODES)}")
    bounds = scene_bounds(scenes)
    if count < 1 or frames_per_scene < 1 or size < 8:
        raise UserError("need -n >= 1, --frames-per-scene >= 1, --size >= 8")
    write_shapes_dataset(output, count, frames_per_scene, size, fps, split, bounds)
    say(quiet, f"wrote {output}: {count} videos + captions.jsonl")


def data_render(script: Path = typer.Argument(..., help="A Shapes World story script."),
                output: Path = typer.Option(..., "--output", "-o", help="Video to write (+ sidecar .json)."),
                size: int = typer.Option(64), fps: float = typer.Option(8.0, callback=number("--fps", 0, 240, above=True)), seed: int = typer.Option(0, callback=number("--seed", 0, 2 ** 64 - 1)),
                overwrite: bool = OverwriteOption, quiet: bool = QuietOption):
    """Render a Shapes World story exactly (ground truth), with a sidecar JSON of its scenes."""
    from phenaki_cli.data.shapes_world import parse_captions, render_story
    from phenaki_cli.jobs import video_outputs
    from phenaki_cli.story import load_story, sidecar_path
    from phenaki_cli.video_io import VideoWriter, check_video_output

    outputs = video_outputs(output, False, overwrite, inputs=[script])
    story = load_story(script, fps)
    captions = parse_captions([s.prompt for s in story.scenes], [f"{script}:{s.line}" for s in story.scenes])
    rendering = render_story(captions, [s.frames for s in story.scenes], size=size, seed=seed)
    check_video_output(output, len(rendering.frames))
    sidecar = {"fps": fps, "seed": seed, "source": str(script), "scenes": [
        {"prompt": s.prompt, "start": a, "end": b} for s, (a, b) in zip(story.scenes, rendering.scene_ranges)]}
    with outputs.staged() as staged:  # the video and its sidecar, together
        with VideoWriter(output, fps, staged_at=staged[output]) as writer:
            writer.write(rendering.frames)
        staged[sidecar_path(output)].write_text(json.dumps(sidecar, indent=2) + "\n")
    say(quiet, f"wrote {output} ({len(rendering.frames)} frames, {len(story.scenes)} scenes)")


def data_encode(
        data: str = typer.Argument(..., help="'shapes', a video folder, or an image folder (--images)."),
        output: Path = typer.Option(..., "--output", "-o", help="Shard folder to write."),
        tokenizer: Path = typer.Option(..., "--tokenizer", help="Model directory with the trained tokenizer."),
        text_encoder: Optional[str] = typer.Option(
            None, "--text-encoder", help="T5 directory or hub id (default: build a small one from the captions)."),
        frames: int = typer.Option(17, help="Frames per clip (1 + t·n); images are 1 frame."),
        prime_frames: int = typer.Option(5, "--prime-frames", help="Shapes World: frames given in continuation clips."),
        clips: Optional[int] = typer.Option(None, help="Clips to encode (default: 4000 for shapes, one per video)."),
        images: bool = typer.Option(False, "--images", help="DATA is an image folder (LAION-style img + txt)."),
        fps: float = typer.Option(8.0, help="Frame rate clips are sampled at.", callback=number("--fps", 0, 240, above=True)),
        shard_size: int = typer.Option(4096, "--shard-size", help="Clips per shard file."),
        seed: int = typer.Option(0, callback=number("--seed", 0, 2 ** 64 - 1)), workers: int = WorkersOption, device: Optional[str] = DeviceOption,
        threads: int = ThreadsOption, overwrite: bool = OverwriteOption, quiet: bool = QuietOption):
    """Pre-tokenize a dataset into shards (video tokens + T5 embeddings) for `phenaki train`."""
    from phenaki_cli.data.encode import encode_dataset
    from phenaki_cli.files import Outputs
    from phenaki_cli.modeldir import load_tokenizer
    from phenaki_cli.runtime import set_threads
    from phenaki_cli.text import TextEncoder
    from phenaki_cli.train.distributed import Distributed

    setup()
    Outputs([output], overwrite, [tokenizer, None if data == "shapes" else data])
    set_threads(threads)
    if shard_size < 1:
        raise UserError(f"--shard-size must be at least 1, got {shard_size}")
    tok, _ = load_tokenizer(tokenizer)
    target = Distributed.from_env(device).device
    tok.to(target)
    encoder = TextEncoder.load(text_encoder) if text_encoder else None
    # a log file gets plain lines instead of the bar (the files encoded of all there are)
    log = CountLog("encode", "clips" if data == "shapes" else "images" if images else "files", quiet)

    def on_total(count: int) -> None:
        progress.update(task, total=count)
        log.set_total(count)

    def on_batch(count: int) -> None:
        progress.advance(task, count)
        log.advance(count)

    with work_progress(quiet) as progress:
        task = progress.add_task("encode", total=None, status="")
        index = encode_dataset(data, output, tok, encoder, 1 if images else frames, prime_frames, clips, images,
                               fps, seed, workers, shard_size, on_total=on_total, on_batch=on_batch, device=target,
                               on_skip=lambda reason: say(quiet, f"note: skipped {reason}"))
    say(quiet, f"wrote {output}: {index.examples} {index.kind} clips in {len(index.shards)} shards"
                + (f", skipped {index.skipped} unreadable or too-short files" if index.skipped else ""))


def data_embed(shards: Path = typer.Argument(..., help="A token-shard folder (`phenaki data encode`)."),
               output: Path = typer.Option(..., "--output", "-o", help="Shard folder to write."),
               text_encoder: str = typer.Option(..., "--text-encoder", help="T5 directory or hub id to embed the "
                                                                           "prompts with."),
               threads: int = ThreadsOption, overwrite: bool = OverwriteOption, quiet: bool = QuietOption):
    """Embed the prompts of token shards with another text encoder; the token grids stay as they are."""
    from phenaki_cli.data.tokens import embed_shards, is_shard_folder
    from phenaki_cli.files import Outputs
    from phenaki_cli.runtime import set_threads
    from phenaki_cli.text import TextEncoder

    setup()
    if not is_shard_folder(shards):
        raise UserError(f"{shards}: not a token-shard folder (no index.json; make one with `phenaki data encode`)")
    Outputs([output], overwrite, [shards, text_encoder], folders=[output])
    set_threads(threads)
    index = embed_shards(shards, output, TextEncoder.load(text_encoder))
    say(quiet, f"wrote {output}: {index.examples} {index.kind} clips, prompts embedded by {text_encoder}")


def data_text_encoder(
        output: Path = typer.Option(..., "--output", "-o", help="Text encoder folder to write."),
        init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from this T5 folder and keep its "
                                                 "vocabulary (default: build a small one from the captions)."),
        stories: int = typer.Option(20000, "--stories", help="Training-split stories whose captions it reads."),
        steps: int = typer.Option(2000, help="Training steps of 64 captions."),
        lr: float = typer.Option(1e-3, callback=number("--lr", 0, above=True)),
        seed: int = typer.Option(0, callback=number("--seed", 0, 2 ** 31 - 1)),
        keep_states: float = typer.Option(0.0, "--keep-states", callback=number("--keep-states", 0, 1e6),
                                          help="Hold each word's state near the one the starting encoder "
                                               "gives, with this weight, so a transformer trained on that encoder "
                                               "still reads it (the clause is added beside it)."),
        threads: int = ThreadsOption, overwrite: bool = OverwriteOption, quiet: bool = QuietOption,
        as_json: bool = typer.Option(False, "--json", help="Print the held-out figures as JSON.")):
    """Train the small Shapes World T5 to read clauses: each word's state tells its whole clause, so the
    transformer can tell which verb is whose. Held-out compositions never appear in its captions."""
    from phenaki_cli.data.encode import shapes_captions
    from phenaki_cli.data.shapes_sampler import sample_captions
    from phenaki_cli.files import Outputs
    from phenaki_cli.runtime import set_threads
    from phenaki_cli.text import TextEncoder, build_text_encoder
    from phenaki_cli.train.text_encoder import train_clause_reading

    setup()
    if stories < 1 or steps < 1:
        raise UserError(f"--stories and --steps must be at least 1, got {stories} and {steps}")
    outputs = Outputs([output], overwrite, [init_from], folders=[output])
    set_threads(threads)
    encoder = TextEncoder.load(init_from) if init_from is not None else build_text_encoder(shapes_captions())
    captions = sample_captions("train", stories)
    unknown = sorted({w for c in captions[:2000] for w in encoder.unknown_words(c)})
    if unknown:
        raise UserError(f"{init_from}: its vocabulary does not cover the Shapes World words {', '.join(unknown)}")
    with work_progress(quiet) as progress:
        task = progress.add_task("text encoder", total=steps, status="")
        reading = train_clause_reading(
            encoder, captions, sample_captions("heldout", 300), steps=steps, lr=lr, seed=seed, keep_states=keep_states,
            on_step=lambda step, loss: progress.update(task, completed=step, status=f"loss {loss:.4f}"))
    with outputs.staged() as staged:
        encoder.save(staged[output])
    if as_json:
        print(json.dumps({"output": str(output), **reading.as_dict()}))
    drift = "" if reading.state_drift is None else f"; the states moved {reading.state_drift:.3f} of their size"
    say(quiet or as_json, f"wrote {output}: on held-out captions {reading.word_accuracy:.3f} of words tell their "
                          f"whole clause ({reading.slot_accuracy:.3f} of slots), {steps} steps{drift}")
