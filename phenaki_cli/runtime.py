"""Process-wide state: CPU tuning applied once at start-up, numeric precision, and Ctrl-C that
cannot be lost."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools

import torch

from phenaki_cli.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def tune_allocator() -> bool:
    """Keep freed memory in the heap instead of returning it to the kernel.

    Transformer forwards allocate and free the same large temporaries every step; with
    glibc's defaults each one is a fresh mmap that the kernel must fault in page by page.
    Measured here, that was about half of phenaki-pytorch's sampling time. Equivalent to
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<huge>. Returns False where not glibc.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 30))
    except (OSError, AttributeError):
        return False


def precision_scope(device: torch.device, name: str):
    """A context that runs matrix work in `name` (bf16 / fp16 autocast); fp32 runs as is.

    bf16 halves the cost of matrix multiplies on CPUs with native bf16 (AVX512-BF16, AMX) and on
    GPUs; the tokenizer's code lookup stays fp32 under it (quantizer.lookup)."""
    if name not in PRECISIONS:
        raise UserError(f"--precision {name!r}: choose one of {', '.join(PRECISIONS)}")
    if name == "fp32":
        return contextlib.nullcontext()
    if name == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA device (use bf16 on CPU)")
    return torch.autocast(device.type, dtype=torch.bfloat16 if name == "bf16" else torch.float16)


_interrupted = False


def on_interrupt(signum, frame) -> None:
    """SIGINT / SIGTERM handler: remember the interrupt, then raise KeyboardInterrupt.

    Python drops an exception raised inside some callbacks: a Ctrl-C that lands while
    `subprocess` runs its fork hooks (starting ffmpeg) is printed as "Exception ignored" and the
    program runs on. The flag survives that; `raise_if_interrupted` raises it again at the next
    safe point (every frame batch written, every training step)."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    if _interrupted:
        raise KeyboardInterrupt
