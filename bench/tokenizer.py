"""Tokenizer speed at the reference config; prints JSON.

    python bench/tokenizer.py            # 17 frames at 64×64, dim 256, 2+2 layers, 8 heads of 32, codebook 1024

phenaki-pytorch 0.5.0 at this config did 418 encode / 407 decode frames/s on a machine whose fp32
matmul peaked near 277 GFLOP/s (shared/REFERENCES.md). Machines differ, so we also measure this
machine's peak and report the ratio both raw and scaled by the two peaks.

Both precisions are measured: fp32 (the default) and bf16 (`--precision bf16`). What bf16 costs
in quality is measured on the shipped model and real Shapes World clips: the share of tokens
equal to fp32's, and the reconstruction PSNR against the source in each precision.
"""

from __future__ import annotations

import json
import resource
import time

import torch

from pathlib import Path

import numpy as np

from phenaki_cli.config import TOKENIZER_PRESETS
from phenaki_cli.runtime import precision_scope, tune_allocator
from phenaki_cli.tokenizer import CViViT

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "shapes-64"

REFERENCE = {"encode_fps": 418.0, "decode_fps": 407.0, "matmul_peak_gflops": 277.0}


def matmul_peak(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of an n×n×n matrix product in `dtype`."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def best_rate(fn, frames: int, repeats: int = 20, rounds: int = 3) -> float:
    for _ in range(3):
        fn()
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = max(best, frames * repeats / (time.perf_counter() - start))
    return best


def bf16_quality(model: Path = SHIPPED, clips: int = 30) -> dict | None:
    """bf16 against fp32 on a model's tokenizer (the shipped one): token agreement and PSNR, over the
    30 test clips; what differs is said by where (first frame or later) and how close the two codes are."""
    from phenaki_cli.codec import decode_grid, encode_frames
    from phenaki_cli.data.shapes_sampler import sample_clip
    from phenaki_cli.eval.metrics import psnr
    from phenaki_cli.modeldir import load_tokenizer

    if not (model / "config.json").is_file():
        return None
    tokenizer, _ = load_tokenizer(model)
    codes = tokenizer.quantizer.normalized_codes().detach()
    same, first_same, cosines, scores = [], [], [], {"fp32": [], "bf16": []}
    frames_per_clip = 1 + tokenizer.config.temporal_patch_size * 8
    for index in range(clips):
        frames = sample_clip("test", index, frames_per_clip, size=tokenizer.config.image_size).frames
        grids = {p: encode_frames(tokenizer, frames, p) for p in scores}
        equal = grids["fp32"] == grids["bf16"]
        same.append(float(equal.mean()))
        first_same.append(float(equal[0].mean()))
        differ = ~equal
        if differ.any():  # how near the two codes are: cosine of the codebook vectors
            a, b = torch.from_numpy(grids["fp32"][differ]).long(), torch.from_numpy(grids["bf16"][differ]).long()
            cosines.extend((codes[a] * codes[b]).sum(-1).tolist())
        for p in scores:
            scores[p].append(psnr(frames, decode_grid(tokenizer, grids[p], p)))
    return {"model": str(model), "clips": clips, "frames": frames_per_clip,
            "tokens_equal_to_fp32": round(float(np.mean(same)), 4),
            "first_frame_tokens_equal": round(float(np.mean(first_same)), 4),
            "differing_codes_mean_cosine": round(float(np.mean(cosines)), 3) if cosines else None,
            **{f"psnr_{p}_db": round(float(np.mean(v)), 2) for p, v in scores.items()}}


@torch.inference_mode()
def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED, help="whose tokenizer bf16 quality is measured on")
    parser.add_argument("--quality-only", action="store_true", help="skip the speed figures")
    args = parser.parse_args()
    if args.quality_only:
        print(json.dumps({"bf16_quality": bf16_quality(args.model)}, indent=2))
        return
    tune_allocator()
    torch.manual_seed(0)
    model = CViViT(TOKENIZER_PRESETS["reference"]).eval()
    video = torch.rand(1, 17, 3, 64, 64)
    tokens = model.encode(video)
    peak = matmul_peak()
    scale = REFERENCE["matmul_peak_gflops"] / peak
    rates = {}
    for name in ("fp32", "bf16"):
        with precision_scope(torch.device("cpu"), name):
            encode = best_rate(lambda: model.encode(video), 17)
            decode = best_rate(lambda: model.decode(tokens), 17)
        rates[name] = {
            "encode_fps": round(encode, 1), "decode_fps": round(decode, 1),
            "vs_phenaki_pytorch_raw": {"encode": round(encode / REFERENCE["encode_fps"], 2),
                                       "decode": round(decode / REFERENCE["decode_fps"], 2)},
            "vs_phenaki_pytorch_peak_scaled": {"encode": round(encode * scale / REFERENCE["encode_fps"], 2),
                                               "decode": round(decode * scale / REFERENCE["decode_fps"], 2)}}
    print(json.dumps({
        "config": "reference: dim 256, 2+2 layers, 8 heads of 32, patch 8, temporal patch 2, codebook 1024",
        "frames": 17, "size": 64, "tokens": int(tokens.numel()), "threads": torch.get_num_threads(),
        **rates["fp32"], "bf16": rates["bf16"],
        "matmul_peak_gflops": round(peak, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "bf16_quality": bf16_quality(args.model),
    }, indent=2))


if __name__ == "__main__":
    main()
