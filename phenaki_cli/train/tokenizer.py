"""Tokenizer training on the shared loop (train/loop.py).

Clips are addressed by sample number (micro-batch index · batch + j), so a resumed run reads
exactly the clips the uninterrupted run would have read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from phenaki_cli.config import TokenizerConfig, from_dict
from phenaki_cli.data.datasets import SkippedFiles, Unreadable, VideoClips
from phenaki_cli.errors import UserError
from phenaki_cli.modeldir import load_weights, read_config, section
from phenaki_cli.tokenizer import CViViT
from phenaki_cli.tokenizer.cvivit import TokenizerOutput
from phenaki_cli.tokenizer.discriminator import FrameDiscriminator, adversarial_losses
from phenaki_cli.train.checkpoint import check_new_run, is_training_folder
from phenaki_cli.train.distributed import Distributed
from phenaki_cli.train.loop import LoopSettings, Objective, fit
from phenaki_cli.video_io import frames_to_tensor


@dataclass
class TrainSettings(LoopSettings):
    grad_clip: float = 10.0  # the paper's C-ViViT setting
    batch_size: int = 8
    frames: int = 17
    fps: float = 8.0
    workers: int = 0
    l1_weight: float = 0.0  # an L1 reconstruction term beside L2 (sharper edges than L2 alone)
    # pixels unlike their frame's median colour (objects on a plain background) weigh 1 + this in L2:
    # a shape a few pixels wide is a thousandth of a frame, so plain L2 hardly pays for its colour
    object_weight: float = 0.0
    # train the decoder alone: encoder and codebook frozen, so every token a video gets (and any
    # transformer trained on those tokens) stays valid
    decoder_only: bool = False
    adversarial_weight: float = 0.0  # 0: no discriminator
    adversarial_start: int = 0  # the step the adversarial loss starts at (after the codes settle)

    RUN_FIELDS = {**LoopSettings.RUN_FIELDS, "batch_size": "--batch-size", "frames": "--frames", "fps": "--fps",
                  "l1_weight": "--l1", "object_weight": "--object-weight", "adversarial_weight": "--adversarial",
                  "adversarial_start": "--adversarial-start"}

    def check_same_run(self, saved: dict, out: Path) -> None:
        for flag, key in (("--decoder-only", "decoder_only"), ("--adversarial", "adversarial_weight")):
            if bool(saved.get(key)) != bool(getattr(self, key)):  # the modes first: they say the most
                was = "with" if saved.get(key) else "without"
                raise UserError(f"{out}: this run was trained {was} {flag}; resume it {was} {flag}")
        super().check_same_run(saved, out)

    def validate(self) -> None:
        super().validate()
        if min(self.l1_weight, self.object_weight, self.adversarial_weight, self.adversarial_start) < 0:
            raise UserError("--l1, --object-weight, --adversarial and --adversarial-start must be >= 0")
        if self.adversarial_weight and self.strategy == "fsdp":  # untested: its detached weights would be shards
            raise UserError("--adversarial is not supported with --strategy fsdp (use ddp)")



class ShapesClips:
    """Shapes World training clips by sample number (same interface as VideoClips)."""

    def __init__(self, frames: int, size: int):
        self.frames, self.size, self.skipped = frames, size, {}

    def __getitem__(self, sample: int):
        from phenaki_cli.data.shapes_sampler import sample_clip
        clip = sample_clip("train", sample, self.frames, size=self.size)
        return clip.frames, clip.caption


def clip_source(data: str, frames: int, size: int, fps: float, seed: int):
    return ShapesClips(frames, size) if data == "shapes" else VideoClips(data, frames, size, fps, seed)


def collate_videos(items) -> tuple[torch.Tensor | None, list[Unreadable]]:
    """A batch of the readable clips, and the unreadable ones (passed on here: DataLoader workers
    are other processes, so the dataset's own `skipped` is not seen by the trainer)."""
    videos = [frames_to_tensor(item[0]) for item in items if not isinstance(item, Unreadable)]
    return (torch.stack(videos) if videos else None), [item for item in items if isinstance(item, Unreadable)]


class TokenizerObjective(Objective):
    """L2 (+ optional L1) reconstruction + VQ (codebook and commitment) losses, and optionally
    the adversarial loss of a frame discriminator (tokenizer/discriminator.py) from a given step.

    A batch is (video, step): the step says whether the adversarial loss is on yet."""

    metric_names = ("loss", "mse", "l1", "vq", "psnr", "perplexity", "codes_used", "adv_g", "adv_d")

    def __init__(self, model: CViViT, l1_weight: float = 0.0, adversarial_weight: float = 0.0,
                 adversarial_start: int = 0, decoder_only: bool = False, object_weight: float = 0.0):
        super().__init__(model)
        self.l1_weight, self.adversarial_weight, self.adversarial_start = l1_weight, adversarial_weight, adversarial_start
        self.object_weight = object_weight
        self.decoder_only = decoder_only
        # training-only weights: the loop keeps them in the training state, not in the model directory
        self.discriminator = FrameDiscriminator(model.config.channels) if adversarial_weight else None

    def loss(self, batch: tuple[torch.Tensor, int]):
        video, step = batch
        result = self._decoder_only(video) if self.decoder_only else self.model(video)
        reconstruction = result.reconstruction.float()
        mse = F.mse_loss(reconstruction, video)
        l1 = F.l1_loss(reconstruction, video)
        fit = mse
        if self.object_weight:
            weights = 1 + self.object_weight * object_pixels(video)
            fit = ((reconstruction - video).square() * weights).mean() / weights.mean()
        loss = fit + self.l1_weight * l1 + result.vq_loss
        metrics = {"mse": mse.item(), "l1": l1.item(), "vq": result.vq_loss.item(),
                   "psnr": float(10 * np.log10(1 / max(mse.item(), 1e-10))),
                   "perplexity": result.perplexity.item(), "codes_used": result.used_fraction.item()}
        if self.discriminator is not None:
            if step >= self.adversarial_start:
                g_loss, d_loss = adversarial_losses(self.discriminator, video, reconstruction)
                loss = loss + self.adversarial_weight * g_loss + d_loss
                metrics.update(adv_g=g_loss.item(), adv_d=d_loss.item())
            else:  # not yet: the discriminator still takes part in the graph (DDP needs every parameter)
                loss = loss + sum(p.sum() for p in self.discriminator.parameters()) * 0.0
        return loss, dict(metrics, loss=loss.item())

    def _decoder_only(self, video: torch.Tensor) -> TokenizerOutput:
        """Tokens exactly as inference makes them (fp32, outside any autocast), then the decoder."""
        with torch.no_grad(), torch.autocast(video.device.type, enabled=False):
            q = self.model.quantizer(self.model.encode_latents(video))
        reconstruction = self.model.decode_latents(self.model.quantizer.embed(q.indices))
        return TokenizerOutput(reconstruction, q.indices, q.loss, q.perplexity, q.used_fraction)


def object_pixels(video: torch.Tensor, step: float = 0.1) -> torch.Tensor:
    """(b, f, 3, h, w) in [0, 1] → (b, f, 1, h, w) in [0, 1]: how far each pixel is from its frame's
    median colour (summed over channels), saturating at `step`. On a plain background that is 1 on the
    objects and 0 elsewhere, for an object of any size."""
    median = video.flatten(-2).median(dim=-1).values[..., None, None]
    return ((video - median).abs().sum(dim=-3, keepdim=True) / step).clamp(max=1)


def check_codebook_growth(config: TokenizerConfig, init_from: str | Path, decoder_only: bool) -> None:
    """A fine-tune may add codes to its tokenizer's codebook, never remove any; and not with the
    encoder frozen, where new codes would change the tokens a decoder-only run must keep."""
    stored = from_dict(TokenizerConfig, section(read_config(init_from), "tokenizer", init_from),
                       f"{init_from}/config.json [tokenizer]").codebook_size
    if config.codebook_size < stored:
        raise UserError(f"--codebook-size {config.codebook_size}: --init-from {init_from} has {stored} codes; "
                        f"a fine-tune can add codes, not remove them")
    if config.codebook_size > stored and decoder_only:
        raise UserError(f"--codebook-size {config.codebook_size} adds codes, which changes the tokens that "
                        f"--decoder-only keeps; drop one of them")


def freeze_encoder(model: CViViT) -> None:
    """Decoder-only training: no gradient for the weights that choose tokens, and the quantizer
    in eval mode (no dead-code restarts), so the tokens of every video stay exactly as they were."""
    frozen = model.token_parameters().keys()
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name not in frozen)
    model.quantizer.eval()


def write_reconstruction_preview(model: CViViT, frames: np.ndarray, path: Path, fps: float) -> None:
    """Source | reconstruction side by side, one mp4 per preview (`model` in eval mode)."""
    from phenaki_cli.codec import decode_grid, encode_frames
    from phenaki_cli.video_io import write_video

    reconstruction = decode_grid(model, encode_frames(model, frames))
    write_video(path, np.concatenate([frames, reconstruction], axis=2), fps)


def train_tokenizer(data: str, out: str | Path, config: TokenizerConfig, settings: TrainSettings,
                    resume: bool = False, on_step: Callable[[int, dict], None] | None = None,
                    where: Distributed | None = None, init_from: str | Path | None = None,
                    on_skip: Callable[[str], None] | None = None) -> dict:
    """Train (or resume training) a C-ViViT; returns the last logged metrics, with
    "skipped_summary" naming the files left out.

    A new run may start from the weights of `init_from` (fine-tuning): `config` must then be
    that tokenizer's, or it with a refinement head added (the head starts at zero), or with a
    larger codebook (the stored codes kept, the new ones random until they restart as dead codes).
    `on_skip(reason)` hears of the first few unreadable or too-short files, once each."""
    out = Path(out)
    where = where or Distributed()
    torch.manual_seed(settings.seed)
    resuming = resume and is_training_folder(out)
    if resuming:
        config = from_dict(TokenizerConfig, read_config(out)["tokenizer"], f"{out}/config.json [tokenizer]")
    else:
        check_new_run(out)
        if settings.decoder_only and init_from is None:
            raise UserError("--decoder-only trains the decoder of a trained tokenizer: give it with --init-from DIR")
        if init_from is not None:
            check_codebook_growth(config, init_from, settings.decoder_only)
    model = CViViT(config).train()
    if resuming:
        load_weights(model, out / "tokenizer.safetensors")
    elif init_from is not None:
        load_weights(model, Path(init_from) / "tokenizer.safetensors", new_prefixes=CViViT.REFINE_PREFIXES,
                     new_rows=("quantizer.codebook", "quantizer.steps_unused"))
    if settings.decoder_only:
        freeze_encoder(model)
    source = clip_source(data, settings.frames, config.image_size, settings.fps, settings.seed)
    if isinstance(source, VideoClips):
        source.first_readable()
    parts = where.parts(settings.accumulate)
    loader, skipped = None, SkippedFiles(on_new=on_skip)

    def batches(first_step: int):
        # global micro-batch g = (step - 1)·parts + part reads samples g·batch … g·batch + batch − 1
        total = settings.accumulate * where.world
        order = [[((step - 1) * total + part) * settings.batch_size + j for j in range(settings.batch_size)]
                 for step in range(first_step, settings.steps + 1) for part in parts]
        # its own generator: a DataLoader seeds its workers from the global RNG when it starts, and
        # a resumed run starts it at another step, so the global stream (dead-code restarts draw
        # from it) would shift by one draw
        return iter(torch.utils.data.DataLoader(source, batch_sampler=order, collate_fn=collate_videos,
                                                num_workers=settings.workers,
                                                generator=torch.Generator().manual_seed(settings.seed)))

    def load_batch(step: int, part: int):
        nonlocal loader
        if loader is None:  # the first micro-batch of this run (of a resumed one too)
            loader = batches(step)
        video, unreadable = next(loader)
        for item in unreadable:
            skipped.add(item)
        return None if video is None else (video.to(where.device), step)

    def preview(weights: dict, folder: Path, step: int) -> None:
        sample = next((s for s in map(source.__getitem__, range(8)) if not isinstance(s, Unreadable)), None)
        if sample is not None:  # on the CPU, from the saved weights: works for any device and strategy
            snapshot = CViViT(config).eval()
            snapshot.load_state_dict(weights)
            write_reconstruction_preview(snapshot, sample[0], folder / f"step-{step:06d}.mp4", settings.fps)

    def check_resume(state: dict) -> None:
        skipped.files.update(state.get("skipped_files", {}))  # counted once over the whole run

    objective = TokenizerObjective(model, settings.l1_weight, settings.adversarial_weight, settings.adversarial_start,
                                   settings.decoder_only, settings.object_weight)
    last = fit(out, model, objective, settings, resuming, load_batch,
               sections=lambda weights: {"tokenizer": (config, weights)}, where=where,
               extra_state=lambda: {"data": data, "skipped_files": dict(skipped.files)}, preview=preview,
               extra_metrics=lambda: {"skipped_files": len(skipped)}, on_step=on_step, check_resume=check_resume,
               nothing_learned=f"{data}: no clip could be read in any step so far (every file was unreadable "
                               f"or shorter than --frames {settings.frames})")
    return dict(last, skipped_summary=skipped.summary())
