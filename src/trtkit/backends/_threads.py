"""Threads that the main thread can wait for through Ctrl-C.

On Python 3.11, a KeyboardInterrupt landing inside ``Thread.join()`` while the thread still runs can make
join release that thread's state lock (the bpo-45274 handler in ``_wait_for_tstate_lock``); join may then
raise ``RuntimeError: release unlocked lock`` instead, and the interpreter can abort at exit while the thread
still calls into Python. :class:`FlaggedThread` sets an Event when its body has returned, and
:meth:`FlaggedThread.wait_exit` waits on that Event (an interrupted Event wait is harmless), joining only
once the body is done.
"""

from __future__ import annotations

import threading

__all__ = ["FlaggedThread", "wait_exits"]


class FlaggedThread(threading.Thread):
    """A ``threading.Thread`` whose end can be waited for safely while Ctrl-C may arrive."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.exited = threading.Event()

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.exited.set()

    def wait_exit(self) -> KeyboardInterrupt | None:
        """Wait until the thread's body has returned, through any Ctrl-C (the caller has told it to stop,
        so the wait is short); returns the KeyboardInterrupt that came meanwhile, for the caller to raise
        once its cleanup is done, or None."""
        caught: KeyboardInterrupt | None = None
        if self.ident is None:  # never started
            return None
        while True:
            try:
                self.exited.wait()
                break
            except KeyboardInterrupt as exc:
                caught = exc
        self.join()  # the body has returned: the thread ends at once
        return caught


def wait_exits(threads: "list[FlaggedThread]") -> KeyboardInterrupt | None:
    """:meth:`FlaggedThread.wait_exit` for each of ``threads`` (all of them, whatever comes); the first
    KeyboardInterrupt that came meanwhile, or None."""
    caught = [t.wait_exit() for t in threads]
    return next((c for c in caught if c is not None), None)
