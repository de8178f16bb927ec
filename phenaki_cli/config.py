"""Model configs as dataclasses, with JSON load/save and validation that names the bad field."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, TypeVar

from phenaki_cli.errors import UserError

T = TypeVar("T")


TIME_ENCODINGS = ("absolute", "stationary")
DEAD_CODE_RESTARTS = ("random", "error")


@dataclass
class TokenizerConfig:
    """C-ViViT sizes. Defaults are the benchmark reference config (see bench/tokenizer.py)."""

    image_size: int = 64
    channels: int = 3
    patch_size: int = 8  # p: spatial patch side
    temporal_patch_size: int = 2  # t: frames per tubelet after the first frame
    dim: int = 256
    spatial_depth: int = 2
    temporal_depth: int = 2
    heads: int = 8
    dim_head: int = 32
    mlp_ratio: float = 4.0
    codebook_size: int = 1024
    code_dim: int = 32  # factorized codes: looked up in this low-dimensional, l2-normalized space
    commitment_weight: float = 0.25
    dead_code_steps: int = 100  # a code unused for this many training batches is restarted
    # Where a dead code restarts: "random", at vectors of the batch drawn uniformly (mostly plain
    # background, which already has codes); "error", drawn with probability proportional to each
    # vector's squared distance from its code (k-means++ seeding), so spare codes go to what the
    # codebook fits worst: rare patches such as a small object's edge or tip.
    dead_code_restart: str = "random"
    # Pixel refinement head (0 = none): the decoder's linear unpatchify is rank-limited per patch
    # and cannot see across patch borders, which leaves a patch grid and soft corners; a few
    # per-frame 3×3 convolutions over its output fix both. Per frame, so causality is untouched.
    refine_channels: int = 0
    refine_features: int = 8  # extra feature channels the unpatchify hands the head beside RGB
    # Residual pairs of 3×3 convolutions inside the head, between its hidden layer and its output
    # (each sees 4 px further; the head alone sees 7×7 px, less than a small square's corners need).
    # Each starts as the identity, so a fine-tune can deepen a trained head without changing a pixel
    # until they learn.
    refine_blocks: int = 0
    # Encoder spatial attention (0 = all-to-all, as in the paper): with r > 0 each patch attends only
    # to patches at most r rows and r columns away, with a learned relative-position bias instead of
    # absolute positions. All-to-all encoders spread an object's details over far background tokens
    # (a black patch gets dozens of codes depending on where the objects are), which a masked token
    # model then has to predict from global context; local tokens say what is in their own patch.
    encoder_window: int = 0
    decoder_window: int = 0  # the same for the decoder's spatial attention (tokens unchanged)
    # "absolute": a sin/cos time table inside the causal temporal attention and a first frame
    # embedded on its own (the paper's C-ViViT). "stationary": no time positions, and the first
    # frame enters as a tubelet of itself repeated (MAGVIT-v2's replicate padding), so a still
    # tubelet gets the same code at every time step: causal attention over identical inputs gives
    # identical outputs, and only what changed can change a code.
    time_encoding: str = "absolute"

    def validate(self) -> None:
        positive = ["image_size", "channels", "patch_size", "temporal_patch_size", "dim", "heads",
                    "dim_head", "codebook_size", "code_dim", "dead_code_steps"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise UserError(f"tokenizer config: {name} must be positive, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise UserError(
                f"tokenizer config: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.spatial_depth < 0 or self.temporal_depth < 0:
            raise UserError("tokenizer config: depths must be >= 0")
        if self.refine_channels < 0 or self.refine_features < 0 or self.refine_blocks < 0:
            raise UserError("tokenizer config: refine_channels, refine_features and refine_blocks must be >= 0")
        if self.refine_blocks and not self.refine_channels:
            raise UserError("tokenizer config: refine_blocks deepen the refinement head; give refine_channels too")
        for name in ("encoder_window", "decoder_window"):
            if getattr(self, name) < 0:
                raise UserError(f"tokenizer config: {name} must be >= 0, got {getattr(self, name)}")
        if self.dead_code_restart not in DEAD_CODE_RESTARTS:
            raise UserError(f"tokenizer config: dead_code_restart must be one of {', '.join(DEAD_CODE_RESTARTS)}, "
                            f"got {self.dead_code_restart!r}")
        if self.time_encoding not in TIME_ENCODINGS:
            raise UserError(f"tokenizer config: time_encoding must be one of {', '.join(TIME_ENCODINGS)}, "
                            f"got {self.time_encoding!r}")

    @property
    def grid_size(self) -> int:
        """Tokens per side of one time step."""
        return self.image_size // self.patch_size

    def time_steps(self, num_frames: int) -> int:
        """Token time steps for a clip of `num_frames` = 1 + t·n frames."""
        check_frame_count(num_frames, self.temporal_patch_size)
        return 1 + (num_frames - 1) // self.temporal_patch_size

    def frames_for(self, time_steps: int) -> int:
        return 1 + (time_steps - 1) * self.temporal_patch_size


TRANSFORMER_ATTENTION = ("full", "factorized")
TRANSFORMER_POSITIONS = ("absolute", "rotary")


@dataclass
class TransformerConfig:
    """MaskGIT sizes. Defaults are the benchmark reference config (see bench/sampling.py).

    The transformer sees one window: `max_time_steps` token time steps of `grid_size`²
    tokens each (17 frames at t = 2 → 9 time steps of 8×8 = 576 tokens).
    """

    vocab_size: int = 1024  # must cover the tokenizer's codebook; id `vocab_size` is [MASK]
    grid_size: int = 8  # tokens per side of one time step (the tokenizer's image_size / patch_size)
    max_time_steps: int = 9
    dim: int = 256
    depth: int = 4
    heads: int = 8
    dim_head: int = 32
    mlp_ratio: float = 4.0
    text_dim: int = 768  # the text encoder's hidden size (T5 d_model)
    # "full": every token attends to every token of the window (the paper's MaskGIT);
    # "factorized": within each time step, then across time at each position (nn.SpaceTimeBlock)
    attention: str = "full"
    # "absolute": learned (t, row, col) tables summed into the input; "rotary": axial rotary
    # angles on queries and keys, so attention depends on offsets only (one rule everywhere)
    positions: str = "absolute"
    # tokens per side of the square group that is one position inside the transformer: with 2, a
    # 16×16 token grid (4×4-pixel patches) costs what an 8×8 one does; each group's tokens are
    # embedded together and predicted from that position by their own output slice
    token_group: int = 1
    # each masked position also gets the embedding of the latest given token at its own place
    # (earlier in time; for a rewind, the earliest later one): in Shapes World most tokens stay
    # what they were a step earlier, so the model learns corrections to copying, not copying itself
    carry_forward: bool = False
    # trained self-attention blocks (rotary positions over the prompt) that read the text encoder's
    # states before every cross-attention: the small frozen random T5 built for a closed world gives
    # each word a state that hardly depends on word order, so without them "the red square moves
    # down and the green circle grows" and the same prompt with its verbs swapped look alike
    text_layers: int = 0
    # 0, or the tokenizer's code_dim: each token's embedding and logit also get a learned linear map
    # of its code's vector (the tokenizer's normalized code, a fixed buffer), so codes that look
    # alike start, and stay, alike to the model; without it every code is a separate symbol, and a
    # rare code (a small object's edge) learns only from its own few occurrences
    code_features: int = 0

    def validate(self) -> None:
        for name in ["vocab_size", "grid_size", "max_time_steps", "dim", "depth", "heads", "dim_head", "text_dim",
                     "token_group"]:
            if getattr(self, name) <= 0:
                raise UserError(f"transformer config: {name} must be positive, got {getattr(self, name)}")
        for name, allowed in (("attention", TRANSFORMER_ATTENTION), ("positions", TRANSFORMER_POSITIONS)):
            if getattr(self, name) not in allowed:
                raise UserError(f"transformer config: {name} must be one of {', '.join(allowed)}, "
                                f"got {getattr(self, name)!r}")
        if self.grid_size % self.token_group:
            raise UserError(f"transformer config: token_group {self.token_group} does not divide the "
                            f"{self.grid_size}×{self.grid_size} token grid")
        if self.positions == "rotary" and self.dim_head % 2:
            raise UserError(f"transformer config: rotary positions need an even dim_head, got {self.dim_head}")
        if self.code_features < 0:
            raise UserError(f"transformer config: code_features must be 0 or more, got {self.code_features}")
        if self.text_layers < 0:
            raise UserError(f"transformer config: text_layers must be 0 or more, got {self.text_layers}")
        if self.text_layers and (self.text_dim % self.dim_head or self.dim_head % 2):
            raise UserError(f"transformer config: text_layers need an even dim_head that divides text_dim "
                            f"{self.text_dim}, got {self.dim_head}")

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def position_grid(self) -> int:
        """Positions per side of one time step inside the transformer."""
        return self.grid_size // self.token_group


@dataclass
class SamplingConfig:
    """MaskGIT decoding settings (stored in a model directory as its defaults)."""

    steps: int = 12
    guidance: float = 3.0  # classifier-free guidance: uncond + s·(cond − uncond); 0 = unconditional, 1 = conditional
    temperature: float = 4.5  # Gumbel noise on the confidences, annealed linearly to 0
    # guidance draws only codes the conditional model gives at least this share of its top probability
    # (sampling.py), in windows that continue given frames: a story's later windows, image-to-video
    plausibility: float = 0.0
    window_frames: int = 17  # frames per generated window (1 + t·n)
    prime_frames: int = 5  # K: frames re-encoded and frozen at the start of every later window (1 + t·m)

    def validate(self, temporal_patch: int = 2) -> None:
        if self.steps < 1:
            raise UserError(f"sampling: steps must be at least 1, got {self.steps}")
        if not 0 <= self.guidance < math.inf:  # not nan either
            raise UserError(f"sampling: guidance must be a number >= 0, got {self.guidance}")
        if not 0 <= self.temperature < math.inf:
            raise UserError(f"sampling: temperature must be a number >= 0, got {self.temperature}")
        if not 0 <= self.plausibility < 1:
            raise UserError(f"sampling: plausibility must lie in [0, 1), got {self.plausibility}")
        for name in ("window_frames", "prime_frames"):
            value = getattr(self, name)
            if value < 1 or (value - 1) % temporal_patch:
                raise UserError(f"sampling: {name.replace('_', '-')} must be 1 + {temporal_patch}·n, got {value}")
        if self.prime_frames >= self.window_frames:
            raise UserError(f"sampling: prime-frames ({self.prime_frames}) must be fewer than the window "
                            f"({self.window_frames} frames)")


def check_frame_count(num_frames: int, temporal_patch: int) -> None:
    if num_frames < 1 or (num_frames - 1) % temporal_patch:
        valid = ", ".join(str(1 + temporal_patch * n) for n in range(4))
        raise UserError(
            f"got {num_frames} frames; the tokenizer takes 1 + {temporal_patch}·n frames ({valid}, ...)")


def valid_frame_count(num_frames: int, temporal_patch: int) -> int:
    """The largest count <= num_frames of the form 1 + t·n (the documented trimming policy)."""
    if num_frames < 1:
        raise UserError("the video has no frames")
    return 1 + ((num_frames - 1) // temporal_patch) * temporal_patch


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict, where: str) -> T:
    """Build a config dataclass from JSON data; unknown or mistyped fields name themselves."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}")
    values = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if isinstance(default, bool) != isinstance(value, bool) or (
                isinstance(default, (int, float)) and not isinstance(value, (int, float))) or (
                isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float)) or (
                isinstance(default, str) and not isinstance(value, str)):
            raise UserError(f"{where}: field {name} should be {type(default).__name__}, got {value!r}")
        values[name] = value
    config = cls(**values)
    if hasattr(config, "validate"):
        config.validate()
    return config


def config_hash(data: dict) -> str:
    """A short stable hash of a config, recorded with tokens so a mismatch can be caught."""
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# Tokenizer fields that only change how tokens are drawn, never which tokens a video gets:
# a decoder fine-tuned with a new head keeps every token file and shard valid.
DECODER_ONLY_FIELDS = ("refine_channels", "refine_features", "refine_blocks", "decoder_window")
# Fields that act only while a tokenizer trains: the same weights give the same tokens whatever they say.
TRAINING_ONLY_FIELDS = ("dead_code_restart",)


# Encoder fields added after token files existed, with the value that means "as before": left out
# of the hash at that value, so older token files and shard fingerprints still match.
LATER_ENCODER_FIELDS = {"encoder_window": 0, "time_encoding": "absolute"}


def encoding_config(tokenizer_config: dict) -> dict:
    """The tokenizer config without its decoder-only fields: what decides the tokens."""
    return {k: v for k, v in tokenizer_config.items()
            if k not in DECODER_ONLY_FIELDS + TRAINING_ONLY_FIELDS and LATER_ENCODER_FIELDS.get(k, object()) != v}


def tokens_hash(tokenizer_config: dict) -> str:
    """The hash recorded with token files."""
    return config_hash(encoding_config(tokenizer_config))


# Named sizes. "reference" is the benchmark config (compare with phenaki-pytorch 0.5.0);
# "shapes" is the shipped Shapes World tokenizer; "tiny" is for tests; "paper" is Phenaki's.
TOKENIZER_PRESETS = {
    "reference": TokenizerConfig(),
    "shapes": TokenizerConfig(dim=128, heads=4, dim_head=32, codebook_size=512, dead_code_steps=20),
    "tiny": TokenizerConfig(image_size=32, dim=64, spatial_depth=1, temporal_depth=1, heads=2, dim_head=32,
                            codebook_size=256, code_dim=16, dead_code_steps=10),
    "paper": TokenizerConfig(image_size=128, dim=512, spatial_depth=4, temporal_depth=4, heads=8, dim_head=64,
                             codebook_size=8192, code_dim=32),
}

# The paper's MaskGIT (Table 7) is 24 layers of 2048 with 32 heads over 6×16×16 tokens of T5-XXL text.
TRANSFORMER_PRESETS = {
    "reference": TransformerConfig(),
    "shapes": TransformerConfig(vocab_size=512, dim=256, depth=4, heads=8, dim_head=32, text_dim=128),
    "tiny": TransformerConfig(vocab_size=256, grid_size=4, max_time_steps=5, dim=64, depth=2, heads=2,
                              dim_head=32, text_dim=32),
    "paper": TransformerConfig(vocab_size=8192, grid_size=16, max_time_steps=6, dim=2048, depth=24, heads=32,
                               dim_head=64, text_dim=4096),
}
