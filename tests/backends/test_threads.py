"""FlaggedThread: the main thread waits for a thread through Ctrl-C without Thread.join's Python 3.11 hazard."""

from __future__ import annotations

import os
import signal
import threading
import time

from trtkit.backends._threads import FlaggedThread


def test_wait_exit_holds_a_ctrl_c_until_the_thread_is_done():
    finished = threading.Event()

    def body():
        time.sleep(0.5)
        finished.set()

    thread = FlaggedThread(target=body, daemon=True)
    thread.start()
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C while the main thread waits
    caught = thread.wait_exit()
    assert isinstance(caught, KeyboardInterrupt)  # handed back, for the caller to raise after its cleanup
    assert finished.is_set() and not thread.is_alive()


def test_wait_exit_without_ctrl_c_and_on_a_thread_never_started():
    thread = FlaggedThread(target=lambda: None)
    assert thread.wait_exit() is None  # never started: nothing to wait for
    thread.start()
    assert thread.wait_exit() is None and not thread.is_alive() and thread.exited.is_set()
