"""MaskGIT training on pre-encoded token grids.

Clips are encoded once by the frozen tokenizer and T5 into shards (data/tokens.py, `phenaki
data encode`), so a training step runs only the transformer: that is what makes training
affordable. Batches are drawn by (step, part) from a seeded generator, and masks from a
generator seeded by it, so a resumed run sees exactly the batches and masks the
uninterrupted run would have seen, on any number of processes (train/distributed.py).

The output folder is a complete model directory at every checkpoint (tokenizer, transformer,
text encoder, sampling defaults), so `phenaki story --model DIR` can play it while it trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from phenaki_cli.config import SamplingConfig, TransformerConfig, from_dict
from phenaki_cli.data.tokens import TokenExamples
from phenaki_cli.errors import UserError
from phenaki_cli.modeldir import load_weights, read_config
from phenaki_cli.pipeline import TEXT_ENCODER_DIR, check_compatible
from phenaki_cli.text import TextEncoder, pad_embeddings
from phenaki_cli.train.checkpoint import check_new_run, is_training_folder
from phenaki_cli.train.distributed import Distributed
from phenaki_cli.train.loop import LoopSettings, Objective, fit
from phenaki_cli.transformer import MaskGIT
from phenaki_cli.transformer.masking import TaskMix, masked_token_loss


@dataclass
class TransformerTrainSettings(LoopSettings):
    steps: int = 5000
    warmup_steps: int = 200
    weight_decay: float = 0.01
    batch_size: int = 16
    text_drop: float = 0.1  # share of samples trained without text (classifier-free guidance)
    image_share: float = 0.2  # share of steps that train first-frame tokens only (images), as in the paper
    crop_share: float = 0.25  # share of steps on shorter windows (the first frames only), as stories make them
    # completion tasks (transformer/masking.py), shares of the samples; plain generation takes the rest
    predict_share: float = 0.0
    rewind_share: float = 0.0
    infill_share: float = 0.0
    box_share: float = 0.0
    forecast_share: float = 0.0
    object_share: float = 0.0
    corrupt_share: float = 0.0  # share of the visible tokens replaced by a neighbour's (masking.corrupt_visible)
    change_weight: float = 1.0  # loss weight of the tokens that changed since the previous time step

    RUN_FIELDS = {**LoopSettings.RUN_FIELDS, "batch_size": "--batch-size", "text_drop": "text dropout",
                  "image_share": "--image-share", "crop_share": "--crop-share", "predict_share": "--tasks predict=",
                  "rewind_share": "--tasks rewind=", "infill_share": "--tasks infill=", "box_share": "--tasks box=",
                  "forecast_share": "--tasks forecast=", "object_share": "--tasks object=",
                  "corrupt_share": "--corrupt", "change_weight": "--change-weight"}

    @property
    def task_mix(self) -> TaskMix:
        return TaskMix(self.predict_share, self.rewind_share, self.infill_share, self.box_share, self.forecast_share,
                       self.object_share)

    def validate(self) -> None:
        super().validate()
        try:
            self.task_mix.validate()
        except ValueError as e:
            raise UserError(f"--tasks: {e}") from None
        if not 0 <= self.crop_share <= 1:  # nan fails this too
            raise UserError(f"--crop-share must lie in [0, 1], got {self.crop_share}")
        if not 0 <= self.corrupt_share < 1:  # nan fails this too
            raise UserError(f"--corrupt must lie in [0, 1), got {self.corrupt_share}")
        if not 0 < self.change_weight <= 100:  # nan fails this too
            raise UserError(f"--change-weight must lie in (0, 100], got {self.change_weight}")


class MaskedTokenObjective(Objective):
    """Cross-entropy on the masked tokens (transformer/masking.py)."""

    metric_names = ("loss", "accuracy")

    def __init__(self, model: MaskGIT, text_drop: float, mix: TaskMix, corrupt: float = 0.0,
                 change_weight: float = 1.0):
        super().__init__(model)
        self.text_drop, self.mix, self.corrupt, self.change_weight = text_drop, mix, corrupt, change_weight

    def loss(self, batch):
        tokens, text, text_mask, prefix, seed, image_step = batch
        generator = torch.Generator().manual_seed(seed)
        loss, stats = masked_token_loss(self.model, tokens, text, text_mask, prefix, self.text_drop, generator,
                                          self.mix, self.corrupt, self.change_weight)
        return loss, {"loss": loss.item(), "accuracy": stats["accuracy"], "image_step": image_step}


def train_transformer(out: str | Path, tokenizer_dir: str | Path | None, text_encoder: TextEncoder | None,
                      examples: TokenExamples, config: TransformerConfig | None, settings: TransformerTrainSettings,
                      sampling: SamplingConfig | None = None, fps: float = 8.0, resume: bool = False,
                      on_step: Callable[[int, dict], None] | None = None, images: TokenExamples | None = None,
                      where: Distributed | None = None, preview_prompt: str | None = None,
                      init_from: str | Path | None = None, fresh_cross_attention: bool = False) -> dict:
    """Train (or resume training) a MaskGIT on token examples; returns the last logged metrics.

    `images` (first-frame token grids of an image dataset) feed the image steps; without them
    an image step takes the first frame of video examples. A resumed run takes its tokenizer,
    text encoder and configs from `out` (the arguments may be None). A new run may start from the
    transformer weights of `init_from` (fine-tuning; `config` must then be that model's, or that model's
    with `text_layers` added to a model without them); with `fresh_cross_attention` its cross-attention
    starts afresh (`MaskGIT.reset_cross_attention`)."""
    from phenaki_cli.modeldir import load_tokenizer

    out = Path(out)
    where = where or Distributed()
    torch.manual_seed(settings.seed)
    resuming = resume and is_training_folder(out)
    if resuming:
        saved = read_config(out)
        config = from_dict(TransformerConfig, saved["transformer"], f"{out}/config.json [transformer]")
        sampling = from_dict(SamplingConfig, saved.get("sampling", {}), f"{out}/config.json [sampling]")
        tokenizer, _ = load_tokenizer(out)
        text_encoder = TextEncoder.load(out / TEXT_ENCODER_DIR)
    else:
        check_new_run(out)
        tokenizer, _ = load_tokenizer(tokenizer_dir)
    sampling = sampling or SamplingConfig()
    check_compatible(tokenizer.config, config, sampling, text_encoder.dim, str(out))
    for name, data in (("token examples", examples), ("image tokens", images)):
        if data is None:
            continue
        if data.tokens.shape[1] > config.max_time_steps or data.tokens.shape[2:] != (config.grid_size,) * 2:
            raise UserError(f"{name} are {'×'.join(map(str, data.tokens.shape[1:]))} grids; the transformer "
                            f"takes up to {config.max_time_steps}×{config.grid_size}×{config.grid_size}")
        if int(data.tokens.max()) >= tokenizer.config.codebook_size:
            raise UserError(f"{name} hold ids up to {int(data.tokens.max())}, past the tokenizer's "
                            f"codebook of {tokenizer.config.codebook_size}: they were made by another tokenizer")

    model = MaskGIT(config).train()
    if resuming:
        load_weights(model, out / "transformer.safetensors")
    elif init_from is not None:  # text layers added to a model without them keep their (identity) start
        own = from_dict(TransformerConfig, read_config(init_from)["transformer"], f"{init_from}/config.json [transformer]")
        added = ("text_blocks.",) if config.text_layers and not own.text_layers else ()
        load_weights(model, Path(init_from) / "transformer.safetensors", new_prefixes=added)
        if fresh_cross_attention:
            model.reset_cross_attention()
    elif fresh_cross_attention:
        raise UserError("fresh cross-attention is for a fine-tune: give the model to start from with --init-from")
    if config.code_features and not resuming:  # the codes of the tokens it trains on (a fine-tune's too)
        model.set_codes(tokenizer.quantizer.normalized_codes().detach())

    def embedding(prompt: str, store: TokenExamples) -> torch.Tensor:
        if prompt in store.embeddings:  # pre-computed by `phenaki data encode`
            return torch.from_numpy(store.embeddings[prompt].astype(np.float32))
        return text_encoder.embed(prompt)

    def load_batch(step: int, part: int):
        rng = np.random.default_rng([settings.seed, step, part])
        image_step = bool(rng.random() < settings.image_share) if images is not None else None
        store = images if image_step else examples
        index = rng.integers(0, len(store), settings.batch_size)
        tokens = torch.from_numpy(store.tokens[index].astype(np.int64))
        prefix = torch.from_numpy(store.prefix_steps[index])
        if image_step is None:
            image_step = bool(rng.random() < settings.image_share)
        if image_step:  # images: the first frame's tokens alone, nothing given
            tokens, prefix = tokens[:, :1], torch.zeros_like(prefix)
        elif rng.random() < settings.crop_share:
            # the causal tokenizer makes the first T' steps of a clip's tokens exactly the tokens of its first frames
            tokens = tokens[:, : int(rng.integers(int(prefix.max()) + 1, tokens.shape[1] + 1))]
        text, text_mask = pad_embeddings([embedding(store.prompts[i], store) for i in index])
        device = where.device
        return (tokens.to(device), text.to(device), text_mask.to(device), prefix, int(rng.integers(2 ** 62)),
                image_step)

    prompt = preview_prompt or (examples.prompts[0] if len(examples) else "")

    def preview(weights: dict, folder: Path, step: int) -> None:
        from phenaki_cli.pipeline import Phenaki
        from phenaki_cli.video_io import write_video

        snapshot = MaskGIT(config)
        snapshot.load_state_dict(weights)
        pipe = Phenaki(tokenizer, snapshot, text_encoder, sampling, fps)
        frames = np.concatenate([new for _, new in pipe.generate([(prompt, sampling.window_frames)], seed=0)])
        write_video(folder / f"step-{step:06d}.mp4", frames, fps)
        (folder / f"step-{step:06d}.txt").write_text(prompt + "\n")

    objective = MaskedTokenObjective(model, settings.text_drop, settings.task_mix, settings.corrupt_share,
                                     settings.change_weight)
    return fit(out, model, objective, settings, resuming, load_batch,
               sections=lambda weights: {"tokenizer": (tokenizer.config, tokenizer), "transformer": (config, weights),
                                         "sampling": (sampling, None)},
               where=where, extra={"fps": fps, "text_encoder": TEXT_ENCODER_DIR},
               write_files=lambda folder: text_encoder.save(folder / TEXT_ENCODER_DIR), preview=preview,
               on_step=on_step)
