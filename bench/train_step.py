"""Training-step speed of the shipped model's configs; prints JSON.

    python bench/train_step.py            # tokenizer: preset shapes + refinement head, 17 frames, batch 8
                                          # transformer: preset shapes, 11×8×8-token windows, batch 8

A step is forward + backward + AdamW. For each path the bench reports seconds per step, tokens
per second and achieved TFLOP/s (the model's FLOPs, counted from the shapes by torch's
FlopCounterMode, over wall time). The paths:

- `before`: fp32, the fused attention kernel everywhere and (transformer) logits at every position:
  the step as it was before attention was chosen per call (nn.attention_kernel("fused") keeps that
  path selectable) and before the loss asked for the masked positions' logits alone;
- `fp32`, `bf16`: attention chosen per call (nn.attention), in each precision;
- transformer only, `factorized_bf16`: the same size with attention factorized over space and time
  and rotary positions (TransformerConfig attention="factorized", positions="rotary").

Rounds interleave the paths, and each ratio is the median of the per-round ratios against
`before`, so a ratio holds when a shared machine's speed drifts. The JSON also gives this
machine's fp32 and bf16 matmul peaks and the precision `--precision auto` picks here, with why.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer import matmul_peak  # noqa: E402  (bench/tokenizer.py)

from phenaki_cli.config import TOKENIZER_PRESETS, TRANSFORMER_PRESETS  # noqa: E402
from phenaki_cli.nn import attention_kernel  # noqa: E402
from phenaki_cli.runtime import machine_precision, precision_scope, tune_allocator  # noqa: E402
from phenaki_cli.tokenizer import CViViT  # noqa: E402
from phenaki_cli.train.tokenizer import TokenizerObjective  # noqa: E402
from phenaki_cli.transformer import MaskGIT  # noqa: E402
from phenaki_cli.transformer.masking import masked_token_loss  # noqa: E402

BATCH = 8
CPU = torch.device("cpu")


@dataclasses.dataclass
class StepPath:
    """One way to run a training step: a model, its loss on the bench batch, precision, kernel."""

    model: torch.nn.Module
    loss: callable
    precision: str
    kernel: str

    def __post_init__(self):
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with precision_scope(CPU, self.precision), attention_kernel(self.kernel):
            loss = self.loss(self.model)
        loss.backward()
        self.optimizer.step()

    def flops(self) -> int:
        with FlopCounterMode(display=False) as counter:
            self.step()
        return counter.get_total_flops()


def tokenizer_paths() -> tuple[dict[str, StepPath], int]:
    config = dataclasses.replace(TOKENIZER_PRESETS["shapes"], refine_channels=32)  # as shipped
    video = torch.rand(BATCH, 17, 3, config.image_size, config.image_size)

    def loss(model):
        return TokenizerObjective(model)((video, 0))[0]

    def path(precision, kernel):
        torch.manual_seed(0)
        return StepPath(CViViT(config).train(), loss, precision, kernel)

    tokens = BATCH * config.time_steps(17) * config.grid_size ** 2
    return {"before": path("fp32", "fused"), "fp32": path("fp32", "auto"), "bf16": path("bf16", "auto")}, tokens


class AllLogits(MaskGIT):
    """The step before logits were computed at the masked positions only: every position's logits,
    then the masked ones picked (what `before` measures)."""

    def forward(self, tokens, context, only=None):
        logits = super().forward(tokens, context)
        return logits if only is None else logits[only]


def transformer_paths() -> tuple[dict[str, StepPath], int]:
    config = dataclasses.replace(TRANSFORMER_PRESETS["shapes"], max_time_steps=11)  # as shipped
    time_steps, g = config.max_time_steps, config.grid_size
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (BATCH, time_steps, g, g), generator=generator)
    text = torch.randn(BATCH, 12, config.text_dim, generator=generator)
    text_mask = torch.ones(BATCH, 12, dtype=torch.bool)
    prefix = torch.zeros(BATCH, dtype=torch.long)

    def loss(model):
        return masked_token_loss(model, tokens, text, text_mask, prefix, 0.1, torch.Generator().manual_seed(0))[0]

    def path(precision, kernel, model=MaskGIT, **design):
        torch.manual_seed(0)
        return StepPath(model(dataclasses.replace(config, **design)).train(), loss, precision, kernel)

    paths = {"before": path("fp32", "fused", AllLogits), "fp32": path("fp32", "auto"), "bf16": path("bf16", "auto"),
             "factorized_bf16": path("bf16", "auto", attention="factorized", positions="rotary")}
    return paths, BATCH * time_steps * g * g


def measure(paths: dict[str, StepPath], tokens: int, rounds: int, steps: int) -> dict:
    flops = {name: path.flops() for name, path in paths.items()}  # also the warm-up
    seconds = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            start = time.perf_counter()
            for _ in range(steps):
                path.step()
            seconds[name].append((time.perf_counter() - start) / steps)
    result = {}
    for name in paths:
        per_step = statistics.median(seconds[name])
        ratios = [b / s for b, s in zip(seconds["before"], seconds[name])]
        result[name] = {"precision": paths[name].precision, "attention": paths[name].kernel,
                        "seconds_per_step": round(per_step, 4), "tokens_per_second": round(tokens / per_step),
                        "gflop_per_step": round(flops[name] / 1e9, 1),
                        "achieved_tflops": round(flops[name] / per_step / 1e12, 3),
                        "speedup_vs_before": round(statistics.median(ratios), 2),
                        "speedup_range": [round(min(ratios), 2), round(max(ratios), 2)]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="steps per path per round")
    args = parser.parse_args()
    tune_allocator()
    chosen, why = machine_precision(CPU)
    report = {"threads": torch.get_num_threads(), "torch": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "matmul_peak_tflops": {"fp32": round(max(matmul_peak() for _ in range(3)) / 1e3, 3),
                                     "bf16": round(max(matmul_peak(dtype=torch.bfloat16) for _ in range(3)) / 1e3, 3)},
              "precision_auto": {"chosen": chosen, "why": why}, "batch": BATCH}
    for name, build in (("tokenizer", tokenizer_paths), ("transformer", transformer_paths)):
        paths, tokens = build()
        report[name] = {"tokens_per_step": tokens, **measure(paths, tokens, args.rounds, args.steps)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
