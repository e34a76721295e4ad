"""The gateway's processes end with its main process.

`serve` puts its pid in the environment of every process it starts (Sanic's workers and state
manager, the shipper). Killed outright (SIGKILL, the OOM killer), the main process cannot stop
them: its workers would keep the port and serve with nobody to restart or stop them, and Sanic's
state manager would stay behind. So each asks the kernel for SIGTERM when the main process ends
(`follow_main_process`, run as gateway.cli is imported: it is the main module that Python's spawn
start method prepares in every child). A worker takes SIGTERM as a normal stop, its buffered
events flushed to the spool; the shipper ships what is ready and exits.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

MAIN_PID_ENV = "EDGE_GATEWAY_MAIN_PID"
_PR_SET_PDEATHSIG = 1

log = logging.getLogger("gateway")


def mark_main_process() -> None:
    """In `serve`, before starting anything: the processes started from here follow this one."""
    os.environ[MAIN_PID_ENV] = str(os.getpid())


def main_process_pid() -> int | None:
    """The gateway main process's pid in a process it started, else None."""
    value = os.environ.get(MAIN_PID_ENV, "")
    return int(value) if value.isdigit() and int(value) != os.getpid() else None


def main_process_gone() -> bool:
    """True in a process the main process started, once the main process has ended."""
    main = main_process_pid()
    return main is not None and os.getppid() != main


def follow_main_process() -> None:
    """In a direct child of the gateway's main process: SIGTERM when the main process ends."""
    main = main_process_pid()
    if main is None or os.getppid() != main or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("process %d cannot follow the gateway process (prctl errno %d): it will not stop "
                    "if the gateway process is killed", os.getpid(), ctypes.get_errno())
    elif os.getppid() != main:  # the main process ended before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
