"""Process-wide state: CPU tuning applied once at start-up, and Ctrl-C that cannot be lost."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

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
