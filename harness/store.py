"""The run store: plain files, one directory per job, never half-written, never run twice at once.

Layout under ``OUT/<suite>/``::

    <job_id>/            a finished job (status ok or failed): job.json, result.json, log.jsonl,
                         [checkpoint.pt], [embeddings/<set>.npz]
    .tmp/<job_id>.<pid>.<rand>/   a job in progress; renamed to <job_id>/ when complete
    .locks/<job_id>.lock          flock()ed by the run executing that job (holds {"pid", "host", "since"})

A job directory appears only through ``os.rename`` of a complete temporary directory, so a killed run
never leaves a partial result that looks finished. A job's lock is an exclusive ``fcntl.flock`` on
its lock file, held through an open descriptor for as long as the run works on the job: taking it
is one atomic system call, and the kernel drops it when the process dies, so a killed run's lock
frees itself (no stale-lock takeover, no race between checking and taking). Release unlinks the
file while still holding it; a claimer that locked a file already unlinked sees its inode differ
from the path's and tries again, so two runs never hold one job.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

RESULT = "result.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n")
    os.replace(tmp, path)


def read_result(job_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((job_dir / RESULT).read_text())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    def __init__(self, root: str | Path, suite: str):
        self.dir = Path(root) / suite
        self.tmp_dir = self.dir / ".tmp"
        self.lock_dir = self.dir / ".locks"
        for d in (self.dir, self.tmp_dir, self.lock_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname()
        self._held: dict[str, int] = {}  # job id -> open descriptor holding its flock

    # ---------------------------------------------------------------- results
    def job_dir(self, job_id: str) -> Path:
        return self.dir / job_id

    def status(self, job_id: str) -> str | None:
        """``"ok"`` / ``"failed"`` for a finished job, else None."""
        result = read_result(self.job_dir(job_id))
        return result.get("status") if result else None

    def stamp(self, job_id: str) -> int | None:
        """When the job's result was last written (ns), or None: tells whether another run finished it."""
        try:
            return (self.job_dir(job_id) / RESULT).stat().st_mtime_ns
        except OSError:
            return None

    def result(self, job_id: str) -> dict[str, Any] | None:
        return read_result(self.job_dir(job_id))

    def new_tmp(self, job_id: str) -> Path:
        path = self.tmp_dir / f"{job_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def commit(self, job_id: str, tmp: Path) -> Path:
        """Move a complete temporary job directory into place (replacing an older result)."""
        final = self.job_dir(job_id)
        if final.exists():
            trash = self.tmp_dir / f"{job_id}.old.{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
        return final

    # ---------------------------------------------------------------- locks
    def _lock_path(self, job_id: str) -> Path:
        return self.lock_dir / f"{job_id}.lock"

    def claim(self, job_id: str) -> bool:
        """Take the job's lock; False when another live run (or another claim in this process) holds it."""
        if job_id in self._held:
            return False
        path = self._lock_path(job_id)
        for _ in range(3):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its holder released (unlinked) it between our open and our flock: try again
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": self.host, "since": time.time()}).encode())
            self._held[job_id] = fd
            return True
        return False

    def release(self, job_id: str) -> None:
        """Drop the job's lock: unlink the file while still holding it, then close (which unlocks)."""
        fd = self._held.pop(job_id, None)
        if fd is not None:
            self._lock_path(job_id).unlink(missing_ok=True)
            os.close(fd)

    def cleanup(self) -> None:
        """Remove temporary directories left by runs that are gone (killed mid-job)."""
        for tmp in self.tmp_dir.iterdir():
            parts = tmp.name.split(".")
            if len(parts) >= 3 and parts[1] == "old":
                shutil.rmtree(tmp, ignore_errors=True)
                continue
            try:
                pid = int(parts[1])
            except (IndexError, ValueError):
                continue
            if pid != os.getpid() and not _pid_alive(pid):
                shutil.rmtree(tmp, ignore_errors=True)
