"""The training commands: `train-tokenizer` (C-ViViT) and `train` (MaskGIT on token shards).

Each works in one process or under torchrun (`torchrun --nproc-per-node N -m phenaki_cli
train …`): only process 0 prints and writes; all processes train.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer

from phenaki_cli.cli.common import (AccumulateOption, CpuMinutesOption, DeviceOption, EmaOption, KeepOption,
                                    LogEveryOption, PrecisionOption, PreviewOption, QuietOption, ResumeOption,
                                    StepLog, StrategyOption, TensorboardOption, ThreadsOption, UntilStepOption,
                                    WorkersOption, number, say, setup, work_progress)
from phenaki_cli.cli.runs import DERIVED_FIELDS, fixed_by, given, interrupted, resumed, same_design
from phenaki_cli.errors import UserError


def _loop_settings(cls, **values):
    values["tensorboard"] = str(values["tensorboard"] or "")
    values["cpu_minutes"] = _minutes(values.get("cpu_minutes", ""))
    values["warmup_steps"] = min(values.pop("warmup_cap"), max(1, values["steps"] // 10))
    return cls(**values)


def _minutes(text: str) -> tuple[float, ...]:
    """'5,10,20' → (5.0, 10.0, 20.0)."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"--cpu-minutes {text!r}: give minutes separated by commas, e.g. 5,10,20") from None


def _task_shares(text: str) -> dict[str, float]:
    """'predict=0.1,box=0.2' → {'predict_share': 0.1, 'box_share': 0.2}."""
    from phenaki_cli.transformer.masking import TASKS

    shares = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in TASKS[1:]:
            raise UserError(f"--tasks {item!r}: tasks are {', '.join(TASKS[1:])}")
        try:
            shares[f"{name}_share"] = float(value)
        except ValueError:
            raise UserError(f"--tasks {item!r}: the share must be a number, e.g. {name}=0.1") from None
    return shares


def _throughput(clips_per_step: int):
    """'N clips/s' over this run so far (a resumed run counts from where it resumed)."""
    first: list[int] = []

    def rate(step: int, row: dict) -> str:
        first[:] = first or [step - 1]
        seconds = row.get("seconds", 0.0)
        return f"{(step - first[0]) * clips_per_step / seconds:.1f} clips/s" if seconds else ""
    return rate


def train_tokenizer_command(
        ctx: typer.Context,
        data: str = typer.Argument(..., help="'shapes' (Shapes World, streamed) or a dataset folder."),
        output: Path = typer.Option(..., "--output", "-o", help="Model directory to write (and resume from)."),
        preset: str = typer.Option("shapes", help="Tokenizer size: reference | shapes | tiny | paper."),
        config: Optional[Path] = typer.Option(None, help="A JSON file of tokenizer config fields that override the "
                                              "preset's (e.g. dim, codebook_size)."),
        steps: int = typer.Option(2000), batch_size: int = typer.Option(8, help="Clips per micro-batch per process."),
        frames: int = typer.Option(17), fps: float = typer.Option(8.0, help="Frame rate clips are sampled at.", callback=number("--fps", 0, 240, above=True)),
        lr: float = typer.Option(3e-4, callback=number("--lr", 0, above=True)), save_every: int = typer.Option(250), seed: int = typer.Option(0, callback=number("--seed", 0, 2 ** 64 - 1)),
        workers: int = WorkersOption, accumulate: int = AccumulateOption, ema: float = EmaOption,
        keep_last: int = KeepOption, preview_every: int = PreviewOption, precision: str = PrecisionOption,
        strategy: str = StrategyOption, tensorboard: Optional[Path] = TensorboardOption,
        device: Optional[str] = DeviceOption, resume: bool = ResumeOption, quiet: bool = QuietOption,
        cpu_minutes: str = CpuMinutesOption, until_step: int = UntilStepOption, log_every: int = LogEveryOption,
        threads: int = ThreadsOption,
        init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from this tokenizer's weights "
                                                 "and config (a model directory or training folder)."),
        decoder_only: bool = typer.Option(False, "--decoder-only", help="Train the decoder alone: tokens (and "
                                          "a transformer trained on them) stay valid."),
        refine_channels: Optional[int] = typer.Option(None, "--refine-channels", help="Add a per-frame "
                                                      "convolutional refinement head of this width (0: none)."),
        refine_blocks: Optional[int] = typer.Option(None, "--refine-blocks", help="Residual convolution pairs "
                                                    "inside the refinement head; with --init-from, more than it "
                                                    "has deepens the head (each new one starts as no change)."),
        codebook_size: Optional[int] = typer.Option(None, "--codebook-size", help="Codes in the codebook; with "
                                                    "--init-from, more than it has adds new codes (it keeps its "
                                                    "own)."),
        dead_code_restart: Optional[str] = typer.Option(None, "--dead-code-restart", help="random | error: "
                                                        "restart unused codes at batch vectors drawn uniformly, or "
                                                        "by how badly the codebook fits them."),
        encoder_window: Optional[int] = typer.Option(None, "--encoder-window", help="Encoder spatial attention "
                                                     "within this many patches (0: all-to-all); local tokens "
                                                     "are easier for the transformer to predict."),
        decoder_window: Optional[int] = typer.Option(None, "--decoder-window", help="Decoder spatial attention "
                                                     "within this many patches (0: all-to-all)."),
        time_encoding: Optional[str] = typer.Option(None, "--time-encoding", help="absolute (the paper's sin/cos "
                                                    "table) | stationary (no time positions: a still tubelet keeps "
                                                    "its code at every time step)."),
        l1: float = typer.Option(0.0, "--l1", help="Weight of an L1 reconstruction term beside L2."),
        object_weight: float = typer.Option(0.0, "--object-weight", help="Extra L2 weight of pixels unlike their "
                                            "frame's median colour (objects on a plain background; 0: off)."),
        adversarial: float = typer.Option(0.0, "--adversarial", help="Weight of a frame discriminator's "
                                          "adversarial loss (0: off; e.g. 0.1)."),
        adversarial_start: int = typer.Option(0, "--adversarial-start", help="Step the adversarial loss "
                                              "starts at.")):
    """Train the C-ViViT tokenizer; checkpoints in --output resume exactly."""
    from phenaki_cli.config import TOKENIZER_PRESETS, TokenizerConfig, check_frame_count, from_dict
    from phenaki_cli.modeldir import read_config, section
    from phenaki_cli.train.checkpoint import is_training_folder
    from phenaki_cli.train.distributed import Distributed
    from phenaki_cli.runtime import set_threads
    from phenaki_cli.train.loop import TrainingInterrupted
    from phenaki_cli.train.tokenizer import TrainSettings, train_tokenizer

    setup()
    design = {"encoder_window": encoder_window, "time_encoding": time_encoding, "decoder_window": decoder_window}
    if init_from is not None:
        if config is not None:
            raise UserError("--init-from takes the config of the tokenizer it starts from; drop --config")
        flag = next((f"--{k.replace('_', '-')}" for k, v in design.items() if v is not None), None)
        if flag is not None:
            raise UserError(f"{flag} changes the {'decoder' if flag == '--decoder-window' else 'encoder'}, so it "
                            f"cannot start from --init-from's weights")
        cfg = from_dict(TokenizerConfig, section(read_config(init_from), "tokenizer", init_from),
                        f"{init_from / 'config.json'} [tokenizer]")
    elif preset in TOKENIZER_PRESETS:
        cfg = _design(TOKENIZER_PRESETS[preset], config, **design)
    else:
        raise UserError(f"--preset {preset!r}: choose one of {', '.join(TOKENIZER_PRESETS)}")
    # options that a fine-tune may change too (the other design options would change its weights)
    added = {k: v for k, v in {"refine_channels": refine_channels, "refine_blocks": refine_blocks,
                               "codebook_size": codebook_size, "dead_code_restart": dead_code_restart}.items()
             if v is not None}
    cfg = dataclasses.replace(cfg, **added)
    cfg.validate()
    settings = _loop_settings(TrainSettings, steps=steps, batch_size=batch_size, frames=frames, fps=fps, lr=lr,
                              save_every=save_every, seed=seed, workers=workers, warmup_cap=100,
                              accumulate=accumulate, ema_decay=ema, keep_last=keep_last, preview_every=preview_every,
                              precision=precision, strategy=strategy, tensorboard=tensorboard, l1_weight=l1,
                              object_weight=object_weight,
                              decoder_only=decoder_only, adversarial_weight=adversarial,
                              adversarial_start=adversarial_start, cpu_minutes=cpu_minutes, until_step=until_step)
    settings.validate()
    set_threads(threads)
    where = Distributed.from_env(device)
    quiet = quiet or not where.is_main
    if resume and is_training_folder(output):
        own = from_dict(TokenizerConfig, section(read_config(output), "tokenizer", output),
                        f"{output / 'config.json'} [tokenizer]")
        if init_from is None:  # what the design options would make, against the run's own design
            asked = _design(cfg if given(ctx, "preset") else own, config, **design)
            same_design(dataclasses.replace(asked, **added), own, output)
        cfg = own
        settings = resumed(ctx, output, settings, quiet)
    check_frame_count(settings.frames, cfg.temporal_patch_size)
    skipped = _skip_notes(quiet)
    try:
        with work_progress(quiet) as progress:
            task = progress.add_task("train-tokenizer", total=settings.steps, status="")
            rate = _throughput(settings.batch_size * settings.accumulate * where.world)
            log = StepLog("train-tokenizer", settings.steps, log_every, quiet)

            def on_step(step: int, row: dict) -> None:
                status = (f"loss {row.get('loss', float('nan')):.4f} PSNR {row.get('psnr', float('nan')):.1f} dB "
                          f"codes {row.get('codes_used', 0):.0%}")
                progress.update(task, completed=step, status=f"{status} {rate(step, row)}")
                log(step, row, status)
            last = train_tokenizer(data, output, cfg, settings, resume=resume, on_step=on_step, where=where,
                                   init_from=init_from, on_skip=skipped)
    except TrainingInterrupted as stopped:
        raise interrupted(output, stopped, where.is_main) from None
    else:
        where.close(finished=True)
    finally:
        where.close()
    say(quiet, f"wrote {output}: step {last.get('step', settings.steps)}, PSNR {last.get('psnr', float('nan')):.2f} dB"
                + (f"; {last['skipped_summary']}" if last.get("skipped_summary") else ""))


def _skip_notes(quiet: bool):
    """Name the first few files a run skips, once each, as it meets them."""
    return lambda reason: say(quiet, f"note: skipped {reason}")  # SkippedFiles tells only the first few


def _load_shards(data: str, shards: Path, tokenizer, text_encoder: Optional[str], frames: int, prime_frames: int,
                 clips: Optional[int], images: bool, fps: float, seed: int, workers: int, where, progress,
                 quiet: bool):
    """A shard folder as is, or 'shapes' / a dataset folder encoded into `shards` first (by process 0)."""
    from phenaki_cli.data.encode import encode_dataset
    from phenaki_cli.data.tokens import is_shard_folder, load_shards, tokenizer_fingerprint
    from phenaki_cli.text import TextEncoder

    if is_shard_folder(data):
        shards = Path(data)
    elif not is_shard_folder(shards):
        if where.is_main:
            task = progress.add_task(f"encode {'images' if images else 'clips'}", total=None, status="")
            encode_dataset(data, shards, tokenizer, TextEncoder.load(text_encoder) if text_encoder else None,
                           frames, prime_frames, clips, images, fps, seed, workers,
                           on_total=lambda n: progress.update(task, total=n),
                           on_batch=lambda n: progress.advance(task, n), on_skip=_skip_notes(quiet))
        where.barrier()
    index, examples = load_shards(shards)
    if index.tokenizer_fingerprint != tokenizer_fingerprint(tokenizer):
        raise UserError(f"{shards}: these tokens were made by another tokenizer (fingerprint "
                        f"{index.tokenizer_fingerprint}); encode the data again with this one")
    if index.skipped and not quiet:
        first = f" (first: {index.skipped_files[0]})" if index.skipped_files else ""
        say(quiet, f"note: {shards}: {index.skipped} unreadable or too-short files were skipped when encoding{first}")
    return shards, index, examples


def _design(config, config_file: Path | None, **fields):
    """`config` (a preset) with the fields of a JSON file and the given options (None: unchanged)
    overriding it: a file need name only the fields it changes."""
    from phenaki_cli.config import from_dict, to_dict

    values = to_dict(config)
    if config_file is not None:
        try:
            overrides = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{config_file}: cannot read a JSON config ({e})") from None
        if not isinstance(overrides, dict):
            raise UserError(f"{config_file}: expected a JSON object of config fields")
        values.update(overrides)
    values.update({k: v for k, v in fields.items() if v is not None})
    return from_dict(type(config), values, str(config_file or "transformer config"))


def _added_parts(own, asked, config_file: Path | None):
    """The design an --init-from run trains: the model's own, with text layers added by --config when it
    has none (they start as the identity, so the model starts from what it could do); any other change
    is refused, naming the field."""
    from phenaki_cli.config import to_dict

    asked_values = to_dict(asked)
    for field in (k for k, v in to_dict(own).items() if asked_values[k] != v):
        if field != "text_layers" or own.text_layers:
            raise UserError(f"--config {config_file}: asks for {field} {getattr(asked, field)!r}, but an --init-from "
                            f"run keeps its model's design ({field} {getattr(own, field)!r}); it may only add "
                            f"text_layers to a model without them")
    return asked


def train_command(
        ctx: typer.Context,
        data: str = typer.Argument(..., help="Token shards (`phenaki data encode`), a dataset folder, or 'shapes'."),
        output: Path = typer.Option(..., "--output", "-o", help="Model directory to write (and resume from)."),
        tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Model directory of a trained tokenizer "
                                                     "(default with --init-from: that model's)."),
        text_encoder: Optional[str] = typer.Option(
            None, "--text-encoder", help="T5 directory or hub id used when encoding DATA here (default: build a "
                                         "small one from the captions)."),
        images: Optional[str] = typer.Option(None, "--images", help="Image shards or an image folder (img + txt) "
                                                                   "for the image steps."),
        image_share: float = typer.Option(0.2, "--image-share", help="Share of steps on images (paper: 0.2)."),
        tasks: str = typer.Option("", "--tasks", help="Task shares of the samples, e.g. predict=0.1,"
                                                    "rewind=0.1,infill=0.1,box=0.1; forecast masks all after the "
                                                    "first step; object boxes one object's whole path (the rest: "
                                                    "plain generation)."),
        corrupt: float = typer.Option(0.0, "--corrupt", help="Share of the visible tokens replaced by a neighbour's "
                                      "in training, so the model learns to continue from imperfect tokens."),
        crop_share: float = typer.Option(0.25, "--crop-share", help="Share of the video steps trained on a shorter "
                                         "window (the clip's first steps, a random length), as stories make them "
                                         "and where more of the tokens follow a given start."),
        change_weight: float = typer.Option(1.0, "--change-weight", help="Loss weight of the tokens that differ "
                                            "from the previous time step's at their place (motion, growth, colour "
                                            "change); 1 weighs all alike."),
        preset: str = typer.Option("shapes", help="Transformer size: reference | shapes | tiny | paper."),
        config_file: Optional[Path] = typer.Option(None, "--config", help="A JSON file of transformer config "
                                                   "fields that override the preset's (e.g. dim, depth)."),
        attention: Optional[str] = typer.Option(None, "--attention", help="full (the paper's) | factorized "
                                                "(within each time step, then across time)."),
        positions: Optional[str] = typer.Option(None, "--positions", help="absolute (learned tables) | rotary "
                                                "(attention sees offsets only)."),
        init_from: Optional[Path] = typer.Option(
            None, "--init-from", help="Start from this model directory's transformer (fine-tuning; its size, not "
                                      "--preset)."),
        fresh_cross_attention: bool = typer.Option(
            False, "--fresh-cross-attention", help="With --init-from: start the cross-attention (how the model "
                                                   "reads the prompt) afresh, so it learns to read the text again: "
                                                   "through text layers added by --config, or from another text "
                                                   "encoder of the same width (the shards')."),
        new_text_encoder: bool = typer.Option(
            False, "--new-text-encoder", help="With --init-from: the shards' text encoder may differ from the "
                                              "model's (same width); the model keeps its cross-attention (for an "
                                              "encoder trained from the model's with `data text-encoder "
                                              "--keep-states`, whose states it still reads)."),
        clips: Optional[int] = typer.Option(None, help="Clips to encode (default: 4000 for shapes, one per video)."),
        frames: int = typer.Option(17, help="Frames per clip: one window (1 + t·n)."),
        prime_frames: int = typer.Option(5, "--prime-frames", help="Frames given at the start of continuation clips."),
        fps: float = typer.Option(8.0, help="Frame rate clips are sampled at.", callback=number("--fps", 0, 240, above=True)),
        steps: int = typer.Option(5000), batch_size: int = typer.Option(16, help="Clips per micro-batch per process."),
        lr: float = typer.Option(3e-4, callback=number("--lr", 0, above=True)), save_every: int = typer.Option(250), seed: int = typer.Option(0, callback=number("--seed", 0, 2 ** 64 - 1)),
        workers: int = WorkersOption, accumulate: int = AccumulateOption, ema: float = EmaOption,
        keep_last: int = KeepOption, preview_every: int = PreviewOption, precision: str = PrecisionOption,
        strategy: str = StrategyOption, tensorboard: Optional[Path] = TensorboardOption,
        device: Optional[str] = DeviceOption, resume: bool = ResumeOption, quiet: bool = QuietOption,
        cpu_minutes: str = CpuMinutesOption, until_step: int = UntilStepOption, log_every: int = LogEveryOption,
        threads: int = ThreadsOption):
    """Train the MaskGIT transformer on token shards; checkpoints in --output resume exactly.

    DATA that is not yet encoded is encoded once into OUTPUT.tokens/ (images into OUTPUT.images/)."""
    from dataclasses import replace

    from phenaki_cli.config import TRANSFORMER_PRESETS, SamplingConfig, TransformerConfig, check_frame_count, from_dict
    from phenaki_cli.data.tokens import TEXT_ENCODER_DIR, text_encoder_fingerprint
    from phenaki_cli.modeldir import load_tokenizer, read_config, section
    from phenaki_cli.text import TextEncoder
    from phenaki_cli.train.checkpoint import is_training_folder
    from phenaki_cli.train.distributed import Distributed
    from phenaki_cli.runtime import set_threads
    from phenaki_cli.train.loop import TrainingInterrupted
    from phenaki_cli.train.transformer import TransformerTrainSettings, train_transformer

    setup()
    if preset not in TRANSFORMER_PRESETS:
        raise UserError(f"--preset {preset!r}: choose one of {', '.join(TRANSFORMER_PRESETS)}")
    if not 0 <= image_share <= 1:
        raise UserError(f"--image-share must lie in [0, 1], got {image_share}")
    resuming = resume and is_training_folder(output)
    design = [flag for flag, value in (("--config", config_file), ("--attention", attention),
                                       ("--positions", positions)) if value is not None]
    fixed_design = [flag for flag in design if flag != "--config"]  # --config may add text layers (below)
    if fixed_design and init_from is not None and not resuming:
        raise UserError(f"{fixed_design[0]} sets a new model's design; an --init-from run keeps its own")
    if resuming:  # what the design options would make, against the run's own design
        own = from_dict(TransformerConfig, section(read_config(output), "transformer", output),
                        f"{output / 'config.json'} [transformer]")
        base = own if not given(ctx, "preset") else replace(
            TRANSFORMER_PRESETS[preset], **{k: getattr(own, k) for k in DERIVED_FIELDS})
        same_design(_design(base, config_file, attention=attention, positions=positions), own, output)
    if fresh_cross_attention and init_from is None:
        raise UserError("--fresh-cross-attention starts a fine-tune's cross-attention afresh: it needs --init-from")
    if new_text_encoder and init_from is None:
        raise UserError("--new-text-encoder lets a fine-tune read another text encoder: it needs --init-from")
    if not resuming and tokenizer is None and init_from is not None:  # a fine-tune's tokens are its model's
        tokenizer = init_from
    if not resuming and tokenizer is None:
        raise UserError("--tokenizer DIR is required for a new run (a model directory with a trained tokenizer)")
    tok, tokens_hash = load_tokenizer(output if resuming else tokenizer)
    if resuming and tokenizer is not None and load_tokenizer(tokenizer)[1] != tokens_hash:
        raise UserError(f"--tokenizer {tokenizer}: {output} was trained on another tokenizer's tokens (a resumed "
                        f"run keeps its own; drop --tokenizer)")
    windows = {"frames": frames, "prime_frames": prime_frames}
    if resuming:  # the run's own window, unless given (and then it must be the same)
        run = section(read_config(output), "sampling", output)
        windows = fixed_by(ctx, windows, {"frames": run["window_frames"], "prime_frames": run["prime_frames"]},
                            f"{output} was trained with", "start a new run")
    check_frame_count(windows["frames"], tok.config.temporal_patch_size)
    settings = _loop_settings(TransformerTrainSettings, steps=steps, batch_size=batch_size, lr=lr,
                              save_every=save_every, seed=seed, warmup_cap=200, accumulate=accumulate, ema_decay=ema,
                              image_share=image_share, crop_share=crop_share, **_task_shares(tasks),
                              corrupt_share=corrupt,
                              change_weight=change_weight, keep_last=keep_last,
                              preview_every=preview_every, precision=precision, strategy=strategy,
                              tensorboard=tensorboard, cpu_minutes=cpu_minutes, until_step=until_step)
    settings.validate()
    set_threads(threads)
    where = Distributed.from_env(device)
    quiet = quiet or not where.is_main
    if resuming:
        settings = resumed(ctx, output, settings, quiet)
    try:
        with work_progress(quiet) as progress:
            shards, index, examples = _load_shards(
                data, output.with_name(output.name + ".tokens"), tok, text_encoder, windows["frames"],
                windows["prime_frames"], clips, False, fps, seed, workers, where, progress, quiet)
            # shards fix the clips' frames: a window is one clip
            windows = fixed_by(ctx, windows, {"frames": index.frames, "prime_frames": index.prime_frames},
                                f"the shards in {shards} were encoded with", "encode the data again")
            frames, prime_frames = windows["frames"], windows["prime_frames"]
            if text_encoder is not None and text_encoder_fingerprint(TextEncoder.load(text_encoder)) != \
                    index.text_encoder_fingerprint:
                raise UserError(f"--text-encoder {text_encoder}: the shards in {shards} were encoded with another "
                                f"one ({shards / TEXT_ENCODER_DIR}); to train with it, encode the data again")
            image_examples = None
            if images is not None:  # embedded by the same T5 as the videos
                _, image_index, image_examples = _load_shards(
                    images, output.with_name(output.name + ".images"), tok, text_encoder or str(shards / TEXT_ENCODER_DIR),
                    1, 0, None, True, fps, seed, workers, where, progress, quiet)
                if image_index.text_encoder_fingerprint != index.text_encoder_fingerprint:
                    raise UserError(f"{images}: its text embeddings come from another text encoder than {shards}'s; "
                                    f"give the image folder itself, or encode it with `phenaki data encode IMAGES "
                                    f"--images --text-encoder {shards / TEXT_ENCODER_DIR}`")
            # the model's text encoder is the one whose embeddings the shards hold
            encoder = TextEncoder.load(output / TEXT_ENCODER_DIR if resuming else shards / TEXT_ENCODER_DIR)
            if text_encoder_fingerprint(encoder) != index.text_encoder_fingerprint:
                raise UserError(f"{shards}: its text embeddings come from another text encoder than {output}'s")
            if resuming:  # a resumed run reads its config from --output
                config = None
            elif init_from is not None:
                config = from_dict(TransformerConfig, section(read_config(init_from), "transformer", init_from),
                                   f"{init_from / 'config.json'} [transformer]")
                if fresh_cross_attention or new_text_encoder:  # any encoder of the same width
                    if encoder.dim != config.text_dim:
                        raise UserError(f"{shards}: its text embeddings have dim {encoder.dim}, the transformer "
                                        f"of --init-from {init_from} reads {config.text_dim}")
                elif text_encoder_fingerprint(TextEncoder.load(init_from / TEXT_ENCODER_DIR)) != \
                        index.text_encoder_fingerprint:
                    raise UserError(f"--init-from {init_from}: its transformer reads another text encoder than the "
                                    f"shards hold; encode with --text-encoder {init_from / TEXT_ENCODER_DIR}, or "
                                    f"let it read this one with --new-text-encoder or --fresh-cross-attention")
                config = _added_parts(config, _design(config, config_file), config_file)
            else:
                config = replace(TRANSFORMER_PRESETS[preset], vocab_size=tok.config.codebook_size,
                                 grid_size=tok.config.grid_size, max_time_steps=tok.config.time_steps(frames),
                                 text_dim=encoder.dim)
                config = _design(config, config_file, attention=attention, positions=positions)
            sampling = SamplingConfig(window_frames=frames, prime_frames=prime_frames)
            task = progress.add_task("train", total=settings.steps, status="")
            rate = _throughput(settings.batch_size * settings.accumulate * where.world)
            log = StepLog("train", settings.steps, log_every, quiet)

            def on_step(step: int, row: dict) -> None:
                status = f"loss {row.get('loss', float('nan')):.3f} acc {row.get('accuracy', float('nan')):.2f}"
                progress.update(task, completed=step, status=f"{status} {rate(step, row)}")
                log(step, row, status)

            last = train_transformer(output, tokenizer, encoder, examples, config, settings, sampling, fps=fps,
                                     resume=resume, on_step=on_step, images=image_examples, where=where,
                                     init_from=None if resuming else init_from,
                                     fresh_cross_attention=fresh_cross_attention and not resuming)
    except TrainingInterrupted as stopped:
        raise interrupted(output, stopped, where.is_main) from None
    else:
        where.close(finished=True)
    finally:
        where.close()
    say(quiet, f"wrote {output}: step {last.get('step', settings.steps)}, loss {last.get('loss', float('nan')):.3f}")
