"""Model directories: `info` (what one holds) and `export` (a clean one for shipping, from a training folder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from phenaki_cli.cli.common import JsonOption, ModelOption, OverwriteOption, QuietOption, number, out, say
from phenaki_cli.errors import UserError


def info(model: Path = ModelOption, as_json: bool = JsonOption):
    """Describe a model directory: sizes, token grid, parameter counts, sampling defaults."""
    from phenaki_cli.modeldir import load_tokenizer, read_config

    tokenizer, config_hash = load_tokenizer(model)
    c = tokenizer.config
    details = {"model": str(model), "config_hash": config_hash, "tokenizer": vars(c).copy(),
               "tokenizer_parameters": sum(p.numel() for p in tokenizer.parameters()),
               "tokens_per_17_frames": list(tokenizer.token_shape(17))}
    lines = [f"{model}: C-ViViT {c.image_size}×{c.image_size}, patch {c.patch_size}, temporal patch "
             f"{c.temporal_patch_size}, dim {c.dim}, {c.spatial_depth}+{c.temporal_depth} layers, codebook "
             f"{c.codebook_size}; {details['tokenizer_parameters'] / 1e6:.2f} M parameters; 17 frames → "
             f"{'×'.join(map(str, details['tokens_per_17_frames']))} tokens"]
    if "transformer" in read_config(model):
        from phenaki_cli.pipeline import Phenaki
        phenaki = Phenaki.from_pretrained(model)
        t, s = phenaki.transformer.config, phenaki.sampling
        details.update(transformer=vars(t).copy(), sampling=vars(s).copy(), fps=phenaki.fps,
                       transformer_parameters=sum(p.numel() for p in phenaki.transformer.parameters()),
                       text_encoder={"source": phenaki.text_encoder.source, "dim": phenaki.text_encoder.dim,
                                     "parameters": sum(p.numel() for p in phenaki.text_encoder.model.parameters())})
        lines.append(f"MaskGIT: dim {t.dim}, depth {t.depth}, {t.heads} heads of {t.dim_head}, "
                     f"{details['transformer_parameters'] / 1e6:.2f} M parameters; windows of {s.window_frames} frames "
                     f"({t.max_time_steps}×{t.grid_size}×{t.grid_size} tokens), prime {s.prime_frames}; "
                     f"{s.steps} steps, guidance {s.guidance:g}, temperature {s.temperature:g}"
                     f"{f', plausibility {s.plausibility:g}' if s.plausibility else ''}; {phenaki.fps:g} fps")
        lines.append(f"text encoder: T5 d_model {phenaki.text_encoder.dim}, "
                     f"{details['text_encoder']['parameters'] / 1e6:.2f} M parameters ({phenaki.text_encoder.source})")
    else:
        lines.append("tokenizer only: it can tokenize and reconstruct, not generate")
    import torch

    from phenaki_cli.runtime import default_threads, machine_precision

    chosen, why = machine_precision(torch.device("cpu"))
    details["training_precision"] = {"auto": chosen, "why": why}
    lines.append(f"training precision (--precision auto): {chosen}, because {why}")
    threads, why = default_threads()
    details["training_threads"] = {"auto": threads, "why": why}
    lines.append(f"training threads (--threads 0): {threads}, for {why}")
    if as_json:
        print(json.dumps(details))
    else:
        for line in lines:
            out.print(line, highlight=False, markup=False)


def export_command(source: Path = typer.Argument(..., help="A training folder (or any full model directory)."),
                   output: Path = typer.Option(..., "--output", "-o", help="Model directory to write."),
                   fp16: bool = typer.Option(True, "--fp16/--fp32", help="Store weights in fp16 (loads as fp32)."),
                   card: Optional[Path] = typer.Option(None, "--card", help="A MODEL_CARD.md to include."),
                   tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Swap in this tokenizer's "
                                                            "decoder: it must make the same tokens (train-tokenizer "
                                                            "--decoder-only)."),
                   guidance: Optional[float] = typer.Option(None, "--guidance", help="Store this guidance as the "
                                                            "model's sampling default (default: the source's).",
                                                            callback=number("--guidance", 0)),
                   temperature: Optional[float] = typer.Option(None, "--temperature", help="Store this confidence "
                                                               "noise as the model's default (default: the source's).",
                                                               callback=number("--temperature", 0)),
                   overwrite: bool = OverwriteOption, quiet: bool = QuietOption):
    """Write a clean model directory for shipping: weights, text encoder, card; no training state."""
    import torch

    from phenaki_cli.data.tokens import tokenizer_fingerprint
    from phenaki_cli.files import Outputs
    from phenaki_cli.modeldir import load_tokenizer
    from phenaki_cli.pipeline import Phenaki

    Outputs([output], overwrite, [source, tokenizer, card])
    if card is not None and not card.is_file():
        raise UserError(f"{card}: model card not found")
    model = Phenaki.from_pretrained(source)
    if tokenizer is not None:
        replacement, _ = load_tokenizer(tokenizer)
        if tokenizer_fingerprint(replacement) != tokenizer_fingerprint(model.tokenizer):
            raise UserError(f"{tokenizer}: makes other tokens than {source}'s tokenizer (the transformer was "
                            f"trained on those); fine-tune a decoder with train-tokenizer --init-from "
                            f"{source} --decoder-only")
        model.tokenizer = replacement
    # sampling defaults are chosen by evaluating the trained weights, so they are set when shipping them
    model.sampling = model.settings(guidance=guidance, temperature=temperature)
    model.save_pretrained(output, dtype=torch.float16 if fp16 else None,
                          model_card=card.read_text() if card is not None else None)
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    say(quiet, f"wrote {output} ({size / 1e6:.1f} MB)")
