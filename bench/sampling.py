"""MaskGIT sampling speed at the reference config; prints JSON.

    python bench/sampling.py     # dim 256, depth 4, 8 heads of 32, 64×64×17 frames = 576 tokens,
                                 # 18 steps, guidance 3, text dim 768, codebook 1024

phenaki-pytorch 0.5.0 did 0.41 s/step here, a 3-scene story (17 + 14 + 14 frames, prime 5) in
21 s with a 776 MB peak, and its cost grew as tokens^1.8 (shared/REFERENCES.md). We report
seconds per step, frames per second, achieved GFLOP/s against this machine's fp32 matmul
peak, how cost grows with tokens (17 vs 33 frames), the story, and peak RSS.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer import matmul_peak  # noqa: E402  (bench/tokenizer.py)

from phenaki_cli.config import TOKENIZER_PRESETS, TRANSFORMER_PRESETS, SamplingConfig  # noqa: E402
from phenaki_cli.pipeline import Phenaki  # noqa: E402
from phenaki_cli.runtime import precision_scope, tune_allocator  # noqa: E402
from phenaki_cli.sampling import guided_logits, maskgit_decode, prepare_guided  # noqa: E402
from phenaki_cli.text import build_text_encoder  # noqa: E402
from phenaki_cli.tokenizer import CViViT  # noqa: E402
from phenaki_cli.transformer import MaskGIT  # noqa: E402

REFERENCE = {"seconds_per_step": 0.41, "story_seconds": 21.0, "story_peak_mb": 776, "token_exponent": 1.8}
STEPS, GUIDANCE = 18, 3.0


def window_seconds(model: MaskGIT, time_steps: int, text: torch.Tensor, repeats: int = 3,
                   precision: str = "fp32") -> float:
    mask = torch.ones(text.shape[:2], dtype=torch.bool)
    tokens = torch.full((1, time_steps, 8, 8), model.config.mask_id)
    best = math.inf
    with precision_scope(torch.device("cpu"), precision):
        for _ in range(repeats + 1):  # the first run warms up
            start = time.perf_counter()
            context = prepare_guided(model, text, mask, time_steps, GUIDANCE)
            maskgit_decode(model, tokens, context, STEPS, GUIDANCE, 4.5, 1024, torch.Generator().manual_seed(0))
            best = min(best, time.perf_counter() - start)
    return best


def precisions_and_designs(config, text: torch.Tensor) -> dict:
    """Seconds per step at 576 tokens in fp32 and bf16 (`--precision bf16`), for the reference design
    and with factorized attention + rotary positions (the shipped model's design)."""
    rows = {}
    for name, design in (("full", {}), ("factorized_rotary", {"attention": "factorized", "positions": "rotary"})):
        model = MaskGIT(replace(config, **design)).eval()
        for precision in ("fp32", "bf16"):
            per_step = window_seconds(model, 9, text, precision=precision) / STEPS
            rows[f"{name}_{precision}"] = {"seconds_per_step": round(per_step, 4),
                                           "vs_phenaki_pytorch": round(REFERENCE["seconds_per_step"] / per_step, 2)}
    return rows


@torch.inference_mode()
def main() -> None:
    tune_allocator()
    torch.manual_seed(0)
    config = replace(TRANSFORMER_PRESETS["reference"], max_time_steps=17)
    model = MaskGIT(config).eval()
    text = torch.randn(1, 16, config.text_dim)
    mask = torch.ones(1, 16, dtype=torch.bool)

    seconds_17 = window_seconds(model, 9, text)
    seconds_33 = window_seconds(model, 17, text)
    tokens = torch.full((1, 9, 8, 8), config.mask_id)
    context = prepare_guided(model, text, mask, 9, GUIDANCE)
    with FlopCounterMode(display=False) as counter:
        guided_logits(model, tokens, context, GUIDANCE, 1024)
    step_flops = counter.get_total_flops()
    peak = matmul_peak()
    per_step = seconds_17 / STEPS

    # the 3-scene story through the whole pipeline: tokenizer, T5 (dim 768), MaskGIT, decode
    tokenizer = CViViT(TOKENIZER_PRESETS["reference"])
    encoder = build_text_encoder(["a red circle moves left", "the red circle turns blue", "a small square grows"],
                                 d_model=768, layers=1, heads=12)
    # windows of up to 19 frames (10 time steps), so each 14-frame scene after the first is one window
    # (5 given + 14 new); the first scene is a 17-frame window as above
    phenaki = Phenaki(tokenizer, MaskGIT(replace(TRANSFORMER_PRESETS["reference"], max_time_steps=10)), encoder,
                      SamplingConfig(steps=STEPS, guidance=GUIDANCE, window_frames=19, prime_frames=5), fps=8.0)
    scenes = [("a red circle moves left", 17), ("the red circle turns blue", 14), ("a small square grows", 14)]
    start = time.perf_counter()
    frames = sum(len(f) for _, f in phenaki.generate(scenes, seed=0))
    story_seconds = time.perf_counter() - start

    exponent = math.log(seconds_33 / seconds_17) / math.log(1088 / 576)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "config": "reference: dim 256, depth 4, 8 heads of 32, 576 tokens (17 frames at 64×64), codebook 1024, "
                  "text dim 768, 18 steps, guidance 3 (cond + uncond in one batch)",
        "threads": torch.get_num_threads(),
        "seconds_per_step": round(per_step, 4), "window_seconds_17_frames": round(seconds_17, 3),
        "frames_per_second": round(17 / seconds_17, 1),
        "step_gflop": round(step_flops / 1e9, 2), "achieved_gflops": round(step_flops / per_step / 1e9, 1),
        "matmul_peak_gflops": round(peak, 1), "share_of_peak": round(step_flops / per_step / 1e9 / peak, 2),
        "window_seconds_33_frames": round(seconds_33, 3), "token_exponent_576_to_1088": round(exponent, 2),
        "story_3_scenes": {"frames": frames, "seconds": round(story_seconds, 2),
                           "windows": [w.frames for w in phenaki.plan([n for _, n in scenes], phenaki.sampling)]},
        "peak_rss_mb": round(rss, 1),
        "precisions_and_designs": precisions_and_designs(config, text),
        "vs_phenaki_pytorch": {"step_speedup": round(REFERENCE["seconds_per_step"] / per_step, 2),
                               "story_speedup": round(REFERENCE["story_seconds"] / story_seconds, 2),
                               "their_token_exponent": REFERENCE["token_exponent"],
                               "their_story_peak_mb": REFERENCE["story_peak_mb"]},
    }, indent=2))


if __name__ == "__main__":
    main()
