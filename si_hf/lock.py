"""One run per output directory: a lock its main process holds from start to exit.

The lock is an OS file lock (filelock), so the kernel releases it whenever the process ends, a
SIGKILL included; beside it a small JSON file names the holder (host, pid, start time) for the
message a second run gets. A holder file left by a process that is gone marks a stale lock: the next
run takes it over and says so.
"""

import json
import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import RoundError

LOCK_FILE = ".lock"
HOLDER_FILE = ".lock-holder.json"
LOCK_FILES = (LOCK_FILE, HOLDER_FILE)  # what deleting a run (overwrite_output_dir) leaves in place


def describe(holder: dict | None) -> str:
    if not holder:
        return "holder unknown"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"host {holder.get('host')}, pid {holder.get('pid')}, started {started}"


class RunLock:
    """`with RunLock(out): ...` holds `out` for this process, or raises RoundError naming the run
    that holds it."""

    def __init__(self, out, log=print):
        self.out = Path(out)
        self.log = log
        self.lock = FileLock(self.out / LOCK_FILE, timeout=0)

    def holder(self) -> dict | None:
        try:
            return json.loads((self.out / HOLDER_FILE).read_text())
        except (OSError, ValueError):
            return None

    def __enter__(self):
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except Timeout:
            raise RoundError(
                f"{self.out} is in use by another run ({describe(self.holder())}): wait for it to end or stop "
                "it, or use another output_dir") from None
        except FileExistsError:
            raise RoundError(f"output_dir {self.out} exists and is not a directory") from None
        except OSError as err:
            raise RoundError(f"output_dir {self.out}: cannot write there ({err.strerror or err})") from None
        stale = self.holder()
        if stale:  # a run that ended without releasing: killed, or its machine went down
            self.log(f"{self.out}: taking over the lock of a run that is gone ({describe(stale)})")
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        (self.out / HOLDER_FILE).write_text(json.dumps(holder) + "\n")
        return self

    def __exit__(self, *exc):
        (self.out / HOLDER_FILE).unlink(missing_ok=True)
        self.lock.release()
        return False
