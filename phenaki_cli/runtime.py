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
AUTO = "auto"  # resolved by `machine_precision` for the device at hand

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


def default_threads() -> tuple[int, str]:
    """Compute threads per process, and why: the cores this process may run on, shared among the
    processes torchrun starts on this machine (more threads than cores make each step slower)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if local > 1:
        return max(1, cores // local), f"{cores} cores shared by {local} processes"
    return cores, f"{cores} cores available to this process"


def set_threads(threads: int) -> int:
    """Use `threads` compute threads (0: `default_threads`); returns the number set."""
    if threads < 0:
        raise UserError(f"--threads must be at least 0 (0: one per core), got {threads}")
    threads = threads or default_threads()[0]
    torch.set_num_threads(threads)
    return threads


def machine_precision(device: torch.device) -> tuple[str, str]:
    """The precision this device computes fastest at without losing training quality, and why.

    CPUs with bf16 matrix instructions (AMX, AVX512-BF16) multiply bf16 matrices several times as
    fast as fp32 (bench/train_step.py measures it); elsewhere bf16 is emulated and slower, so
    fp32. CUDA devices take bf16 where the GPU supports it."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "this GPU supports bf16"
        return "fp32", "this GPU has no bf16"
    if device.type != "cpu":
        return "fp32", f"no bf16 default for {device.type} devices"
    for unit, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported")):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return "bf16", f"this CPU has bf16 matrix instructions ({unit})"
    return "fp32", "this CPU has no bf16 matrix instructions (bf16 would be emulated and slower)"


def resolve_precision(device: torch.device, name: str) -> str:
    """`name`, or for "auto" the machine's precision (`machine_precision`)."""
    return machine_precision(device)[0] if name == AUTO else name


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
_deferred = False  # inside `interrupts_at_safe_points`: the handler only sets the flag


def on_interrupt(signum, frame) -> None:
    """SIGINT / SIGTERM handler: remember the interrupt, then raise KeyboardInterrupt.

    Python drops an exception raised inside some callbacks: a Ctrl-C that lands while
    `subprocess` runs its fork hooks (starting ffmpeg) is printed as "Exception ignored" and the
    program runs on. The flag survives that; `raise_if_interrupted` raises it again at the next
    safe point (every frame batch written, every training step)."""
    global _interrupted
    _interrupted = True
    if not _deferred:
        raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    if _interrupted:
        raise KeyboardInterrupt


def interrupted() -> bool:
    return _interrupted


@contextlib.contextmanager
def interrupts_at_safe_points():
    """Within: Ctrl-C / SIGTERM only set the flag (`interrupted()`), for code that must stop at a point
    of its choosing. Processes training together stop at the same step boundary that way, instead of
    one leaving in the middle of a collective while the others wait on it and crash."""
    global _deferred
    before, _deferred = _deferred, True
    try:
        yield
    finally:
        _deferred = before
