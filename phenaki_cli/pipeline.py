"""Phenaki: text → video tokens → frames, one window at a time, for stories of any length.

    model = Phenaki.from_pretrained("models/shapes-64")
    for window, frames in model.generate([("a red circle appears", 16), ("the red circle moves left", 16)]):
        writer.write(frames)       # (F, H, W, 3) uint8, in order, nothing kept behind

Each window after the first re-encodes the last K frames made so far with the causal
tokenizer, freezes their tokens, fills the rest under the scene's prompt by MaskGIT
decoding, decodes, and hands on only the new frames. A scene longer than a window slides
within the scene. Only the last K frames are kept between windows, so memory is bounded by
one window whatever the story's length.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from phenaki_cli.config import (SamplingConfig, TokenizerConfig, TransformerConfig, from_dict,
                                valid_frame_count)
from phenaki_cli.errors import UserError
from phenaki_cli.modeldir import load_weights, read_config, save_model_dir, section
from phenaki_cli.runtime import precision_scope
from phenaki_cli.sampling import maskgit_decode, prepare_guided
from phenaki_cli.text import TextEncoder
from phenaki_cli.tokenizer import CViViT
from phenaki_cli.transformer import MaskGIT
from phenaki_cli.video_io import frames_to_tensor, tensor_to_frames

TEXT_ENCODER_DIR = "text_encoder"


@dataclass
class Window:
    """One MaskGIT window of a plan: `prime` given frames, then frames to fill; `keep` are handed on."""

    scene: int
    prime: int
    frames: int  # frames the window decodes to (prime + new, a valid 1 + t·n count)
    keep: int


def plan_windows(scene_frames: list[int], window: int, prime: int, temporal_patch: int,
                 history: int = 0) -> list[Window]:
    """Cut scenes into windows. `history` is how many frames exist before the first scene
    (a video being continued, or a start image)."""
    plan = []
    for scene, remaining in enumerate(scene_frames):
        while remaining > 0:
            if history == 0:
                frames = min(window, 1 + temporal_patch * math.ceil((remaining - 1) / temporal_patch))
                given, keep = 0, min(remaining, frames)
            else:
                given = valid_frame_count(min(history, prime), temporal_patch)
                keep = min(remaining, window - given)
                frames = given + temporal_patch * math.ceil(keep / temporal_patch)
            plan.append(Window(scene, given, frames, keep))
            history += keep
            remaining -= keep
    return plan


def check_compatible(tokenizer: TokenizerConfig, transformer: TransformerConfig, sampling: SamplingConfig,
                     text_dim: int | None, where: str) -> None:
    """The checks public implementations leave to device-side asserts, with messages instead."""
    if transformer.vocab_size < tokenizer.codebook_size:
        raise UserError(f"{where}: transformer vocab_size {transformer.vocab_size} does not cover the tokenizer's "
                        f"codebook of {tokenizer.codebook_size} codes")
    if transformer.code_features and transformer.code_features != tokenizer.code_dim:
        raise UserError(f"{where}: transformer code_features {transformer.code_features} but the tokenizer's codes "
                        f"have {tokenizer.code_dim} dimensions")
    if transformer.grid_size != tokenizer.grid_size:
        raise UserError(f"{where}: transformer grid_size {transformer.grid_size} but the tokenizer makes "
                        f"{tokenizer.grid_size}×{tokenizer.grid_size} tokens per time step")
    sampling.validate(tokenizer.temporal_patch_size)
    steps = tokenizer.time_steps(sampling.window_frames)
    if steps > transformer.max_time_steps:
        raise UserError(f"{where}: a window of {sampling.window_frames} frames is {steps} token time steps, but the "
                        f"transformer has positions for {transformer.max_time_steps}")
    if text_dim is not None and text_dim != transformer.text_dim:
        raise UserError(f"{where}: the text encoder's embeddings have dim {text_dim}, the transformer expects "
                        f"{transformer.text_dim}")


class Phenaki:
    def __init__(self, tokenizer: CViViT, transformer: MaskGIT, text_encoder: TextEncoder,
                 sampling: SamplingConfig, fps: float, name: str = "phenaki"):
        check_compatible(tokenizer.config, transformer.config, sampling, text_encoder.dim, name)
        self.tokenizer, self.transformer, self.text_encoder = tokenizer.eval(), transformer.eval(), text_encoder
        self.sampling, self.fps, self.name = sampling, fps, name

    # ----- model directories -----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, text_encoder: str | os.PathLike | None = None) -> "Phenaki":
        model_dir = Path(model_dir)
        data = read_config(model_dir)
        where = f"{model_dir / 'config.json'}"
        tokenizer_config = from_dict(TokenizerConfig, section(data, "tokenizer", model_dir), f"{where} [tokenizer]")
        if "transformer" not in data:
            raise UserError(f"{model_dir}: holds only a tokenizer (no \"transformer\" section); it can tokenize and "
                            f"reconstruct but not generate")
        transformer_config = from_dict(TransformerConfig, data["transformer"], f"{where} [transformer]")
        sampling = from_dict(SamplingConfig, data.get("sampling", {}), f"{where} [sampling]")
        check_compatible(tokenizer_config, transformer_config, sampling, None, where)
        if text_encoder is None:
            text_encoder = model_dir / data.get("text_encoder", TEXT_ENCODER_DIR)
        encoder = TextEncoder.load(text_encoder)
        check_compatible(tokenizer_config, transformer_config, sampling, encoder.dim, where)
        tokenizer, transformer = CViViT(tokenizer_config), MaskGIT(transformer_config)
        load_weights(tokenizer, model_dir / "tokenizer.safetensors")
        load_weights(transformer, model_dir / "transformer.safetensors")
        return cls(tokenizer, transformer, encoder, sampling, float(data.get("fps", 8)), model_dir.name)

    def save_pretrained(self, model_dir: str | os.PathLike, dtype: torch.dtype | None = None,
                        model_card: str | None = None) -> None:
        def extra_files(folder: Path) -> None:
            self.text_encoder.save(folder / TEXT_ENCODER_DIR)
            if model_card is not None:
                (folder / "MODEL_CARD.md").write_text(model_card)

        save_model_dir(model_dir, {"tokenizer": (self.tokenizer.config, self.tokenizer),
                                   "transformer": (self.transformer.config, self.transformer),
                                   "sampling": (self.sampling, None)},
                       extra={"fps": self.fps, "text_encoder": TEXT_ENCODER_DIR}, dtype=dtype,
                       write_files=extra_files)

    @property
    def tokenizer_hash(self) -> str:
        from phenaki_cli.config import to_dict, tokens_hash
        return tokens_hash(to_dict(self.tokenizer.config))

    # ----- generation ------------------------------------------------------------------------
    def settings(self, **overrides) -> SamplingConfig:
        """The model's sampling defaults with the given (non-None) overrides, validated."""
        settings = replace(self.sampling, **{k: v for k, v in overrides.items() if v is not None})
        check_compatible(self.tokenizer.config, self.transformer.config, settings, None, "sampling settings")
        return settings

    def plan(self, scene_frames: list[int], settings: SamplingConfig, start_frames: int = 0) -> list[Window]:
        """The windows `generate` will run, after `start_frames` given frames (of which the last K prime)."""
        return plan_windows(scene_frames, settings.window_frames, settings.prime_frames,
                            self.tokenizer.config.temporal_patch_size, min(start_frames, settings.prime_frames))

    @torch.inference_mode()
    def generate(self, scenes: list[tuple[str, int]], settings: SamplingConfig | None = None, seed: int = 0,
                 start_frames: np.ndarray | None = None,
                 on_step: Callable[[Window, int], None] | None = None,
                 precision: str = "fp32") -> Iterator[tuple[Window, np.ndarray]]:
        """Yield each window and its new frames (uint8 (F, H, W, 3)), in order.

        `scenes` are (prompt, frames) pairs; `start_frames` (at the model's size) are continued
        from: their last K frames prime the first window (one frame: image-to-video).
        `precision` bf16 runs the models under bf16 autocast (faster on CPUs with bf16 matrix
        instructions; near-tie tokens may differ from fp32's)."""
        settings = settings or self.sampling
        size = self.tokenizer.config.image_size
        if start_frames is not None and (start_frames.ndim != 4 or start_frames.shape[1:] != (size, size, 3)):
            raise UserError(f"start frames must be (F, {size}, {size}, 3), got {tuple(start_frames.shape)}")
        history = None if start_frames is None or len(start_frames) == 0 else start_frames[-settings.prime_frames:]
        generator = torch.Generator().manual_seed(seed)
        grid = self.tokenizer.config.grid_size
        scene, text, text_mask = None, None, None
        for window in self.plan([n for _, n in scenes], settings, 0 if history is None else len(history)):
            if window.scene != scene:  # the prompt's embedding (cached by the encoder), once per scene
                scene = window.scene
                text = self.text_encoder.embed(scenes[scene][0])[None]
                text_mask = torch.ones(text.shape[:2], dtype=torch.bool)
            time_steps = self.tokenizer.config.time_steps(window.frames)
            tokens = torch.full((1, time_steps, grid, grid), self.transformer.config.mask_id, dtype=torch.long)
            with precision_scope(torch.device("cpu"), precision):
                if window.prime:
                    prime = frames_to_tensor(history[-window.prime:])[None]
                    prefix = self.tokenizer.encode(prime)
                    tokens[:, : prefix.shape[1]] = prefix
                context = prepare_guided(self.transformer, text, text_mask, time_steps, settings.guidance)
                # the plausibility constraint only where frames are given: drawing objects from nothing
                # needs codes the conditional model ranks below the background (model card, session 33)
                tokens = maskgit_decode(self.transformer, tokens, context, settings.steps, settings.guidance,
                                        settings.temperature, self.tokenizer.config.codebook_size, generator,
                                        on_step=None if on_step is None else (
                                            lambda step, w=window: on_step(w, step)),
                                        plausibility=settings.plausibility if window.prime else 0.0)
                frames = tensor_to_frames(self.tokenizer.decode(tokens)[0].float())
            new = frames[window.prime: window.prime + window.keep]
            history = new if history is None else np.concatenate([history, new])[-settings.prime_frames:]
            yield window, new
