"""Keep freed memory in the process's heap (glibc): no page-fault storm per evaluation.

PyTorch's CPU tensors come from glibc's ``malloc``. By default glibc hands a block larger
than its mmap threshold (128 KiB at first, raised as such blocks are freed, at most 32 MiB)
to the kernel as a fresh mapping, and gives the top of the heap back once more than twice
that threshold is free. A search allocates and frees the same few buffers tens of thousands
of times, so such buffers are mapped afresh on each call and the kernel zero-fills them page
by page. Measured on the 2-core CPU, one thread (experiments/README.md, "Speed"): the
generator's own ConvTranspose2d + BatchNorm pass (GIAS's tuned copies, GIFD's layer chain,
any generator ggl does not fold) took ~900,000 minor page faults per 5 CPU seconds and ran
2,500-2,900 images per CPU second; with this setting ~6,000 faults and 4,300-4,600.

:func:`keep_freed_memory` sets the mmap threshold to its maximum (32 MiB) and stops trimming,
so a buffer freed by one call is reused by the next. Buffers above 32 MiB are still mapped
per call; the vmap chunk keeps per-candidate gradients below it
(:data:`ggl.objective.HEAP_BLOCK_BYTES`). The cost: the process keeps its peak heap until it
exits. It is process-wide and is applied by :func:`ggl.api.run`; ``GGL_MALLOC=default``
leaves glibc's defaults. Elsewhere than glibc (macOS, musl) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

#: glibc's ``mallopt`` parameters (malloc.h) and the largest mmap threshold it accepts on
#: 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 1024 ** 2

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says (once per process); returns whether
    the setting is in force."""
    global _applied
    if _applied is None:
        _applied = False
        if os.environ.get("GGL_MALLOC", "").lower() != "default" and \
                platform.libc_ver()[0] == "glibc":
            libc = ctypes.CDLL(ctypes.util.find_library("c"))
            trim = libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(2 ** 31 - 1))
            mmap = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD_MAX))
            _applied = bool(trim and mmap)
    return _applied
