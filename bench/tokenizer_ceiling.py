"""The ceiling of tokenizers, not only of whole models: the true test stories through each tokenizer
alone, scored by the analyser (what `phenaki eval --generate N --ceiling` does for a model
directory). Prints one JSON line per tokenizer.

    python bench/tokenizer_ceiling.py TOKENIZER_DIR [...] [--stories 50] [--window 21] [--prime 5]

A tokenizer directory may be a training folder or one of its kept checkpoints, so candidates can be
compared along their learning curves. A perfect transformer would choose exactly these tokens, so no
model on a tokenizer can score above its ceiling; the bars of the shipped model are 0.95 prompt
accuracy and 0.97 continuity. The transformer here is a random stand-in of the right shape (the
ceiling never runs it), and the text encoder is the shipped model's. Each line also gives the
accuracy by the clause's shape word (`by_shape`): the analyser tells a square from a disc by how
much of its box it fills, so rounded corners show up there first.

Given several tokenizers, each line after the first also compares it with the first on the same
clauses and cuts (`against_first`): how many pass through this one only, and through the first only.
Two candidates a few clauses apart on the totals are within the noise of 266 clauses; the clauses on
which they disagree say whether one is better (a sign test on those alone).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from phenaki_cli.config import TRANSFORMER_PRESETS, SamplingConfig
from phenaki_cli.data.shapes_world import SHAPES
from phenaki_cli.eval.generated import generate_and_score, summarize
from phenaki_cli.modeldir import load_tokenizer
from phenaki_cli.pipeline import Phenaki
from phenaki_cli.text import TextEncoder
from phenaki_cli.transformer import MaskGIT

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "shapes-64"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenizers", nargs="+", type=Path)
    parser.add_argument("--stories", type=int, default=50)
    parser.add_argument("--window", type=int, default=21, help="window frames (the long run's)")
    parser.add_argument("--prime", type=int, default=5)
    args = parser.parse_args()
    text_encoder = TextEncoder.load(SHIPPED / "text_encoder")
    first = None
    for folder in args.tokenizers:
        tokenizer, _ = load_tokenizer(folder)
        config = replace(TRANSFORMER_PRESETS["tiny"], vocab_size=tokenizer.config.codebook_size,
                         grid_size=tokenizer.config.grid_size, max_time_steps=tokenizer.config.time_steps(args.window),
                         text_dim=text_encoder.dim)
        sampling = SamplingConfig(window_frames=args.window, prime_frames=args.prime)
        model = Phenaki(tokenizer, MaskGIT(config), text_encoder, sampling, fps=8.0)
        results = generate_and_score(model, args.stories, "test", 0, ceiling=True)
        summary = summarize(results)
        print(json.dumps({"tokenizer": str(folder), **{k: summary.get(k) for k in (
            "stories", "clauses", "prompt_accuracy", "continuity", "psnr", "psnr_worst")},
            "by_shape": by_shape(results), **({} if first is None else {"against_first": against(results, first)})}),
            flush=True)
        first = first or results


def outcomes(results) -> dict[str, list[bool]]:
    return {"clauses": [c.ok for r in results for c in r.report.clauses],
            "cuts": [b.ok for r in results for b in r.report.boundaries]}


def against(results, first) -> dict[str, dict[str, int]]:
    """Per kind, the items (same stories, same order) that pass through this tokenizer only and
    through the first one only."""
    pairs = {kind: list(zip(mine, theirs)) for (kind, mine), theirs in zip(outcomes(results).items(),
                                                                          outcomes(first).values())}
    return {kind: {"only_this": sum(a and not b for a, b in both), "only_first": sum(b and not a for a, b in both)}
            for kind, both in pairs.items()}


def by_shape(results) -> dict[str, float]:
    """Prompt accuracy over the clauses that name each shape."""
    scores: dict[str, list[bool]] = {shape: [] for shape in SHAPES}
    for result in results:
        for clause in result.report.clauses:
            for shape in SHAPES:
                if shape in clause.clause.split():
                    scores[shape].append(clause.ok)
    return {shape: round(sum(oks) / len(oks), 3) for shape, oks in scores.items() if oks}


if __name__ == "__main__":
    main()
