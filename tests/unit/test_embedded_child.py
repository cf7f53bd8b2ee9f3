"""Child processes outlive the thread that started them (they die with this process, not before)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from launcher.embedded import ChildProcess


def test_child_started_from_a_finished_thread_keeps_running(tmp_path: Path) -> None:
    # PR_SET_PDEATHSIG is tied to the forking thread: a restart from a supervisor thread used to
    # get SIGTERM the moment that thread returned.
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    child = ChildProcess("sleeper", sleep, {}, tmp_path / "c.log")
    thread = threading.Thread(target=child.start)
    thread.start()
    thread.join()
    try:
        time.sleep(0.5)
        assert child.alive(), child.log_tail()
    finally:
        assert child.stop(grace_s=5) is not None
