"""Every process mmbench starts ends with the process that started it, whatever ends that one (SIGKILL too).

Figure drawers, the workers' server, its workers and data-loader workers all call `end_with_parent` as they
start: on Linux the kernel then kills them when their parent exits (`prctl(PR_SET_PDEATHSIG)`), so a runner killed
by the out-of-memory killer leaves no process behind to hold its run directory or its memory. Elsewhere it does
nothing (those platforms have no such request).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: prctl's request: the signal this process gets when its parent ends
PR_SET_PDEATHSIG = 1


def end_with_parent(parent: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent ends. `parent`: the pid the caller expects as its
    parent; if that one has already ended (the process was re-parented before asking), end now."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not allowed here (a sandbox): the process keeps its default lifetime
    if parent is not None and os.getppid() != parent:
        os._exit(1)
