"""The guard process of a worker: ends the worker's whole tree, whatever happens to it.

A worker notices its server's end on a Python thread, which cannot run while a task holds
the GIL in a long C call; and once a worker dies, a task's child that made a session of its
own is out of reach of the group kill.  The guard is a tiny parent that watches both.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys

import psutil

PR_SET_CHILD_SUBREAPER = 36
#: Where workers get a guard: the process the server started is then not the worker itself.
AVAILABLE = sys.platform.startswith("linux") and hasattr(os, "pidfd_open")


def guard(sock_fd: int) -> bool:
    """Split in two; the child returns True and is the worker, this process guards its tree.

    The guard is the process the server started and watches (its pid, its exit status).
    As a child subreaper it inherits whatever the worker's tasks leave behind when the
    worker dies, even children in sessions of their own. It ends the whole tree when the
    worker ends (crash, SIGKILL, exit) or when the server's end of the socket closes,
    then ends as the worker ended. It runs no Python thread of the worker, so a task that
    holds the GIL cannot keep it from acting. Linux only; elsewhere this returns False at once.
    """
    if not AVAILABLE:
        return False
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    worker = os.fork()
    if worker == 0:
        return True
    # The server's SIGTERM reaches the worker through the group; the guard stays to the end.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pidfd = os.pidfd_open(worker)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(sock_fd, select.POLLRDHUP)
    hangup = select.POLLRDHUP | select.POLLHUP | select.POLLERR
    while not any(fd == pidfd or ev & hangup for fd, ev in poller.poll()):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.kill(worker, signal.SIGKILL)  # a no-op when it has ended (a zombie until reaped)
    _end_descendants()
    _, status = os.waitpid(worker, 0)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _end_descendants() -> None:
    """SIGKILL every descendant of the guard (orphans of the worker's tree are its children)."""
    for _ in range(3):  # a dying tree may still have forked: look again
        children = psutil.Process().children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        if not children:
            return
