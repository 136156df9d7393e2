"""The run store: plain files, one directory per job, never half-written, never run twice at once.

Layout under ``OUT/<suite>/``::

    <job_id>/            a finished job (status ok or failed): job.json, result.json, log.jsonl,
                         [checkpoint.pt], [embeddings/<set>.npz]
    .tmp/<job_id>.<pid>.<rand>/   a job in progress; renamed to <job_id>/ when complete
    .locks/<job_id>.lock          flock()ed by the run executing that job (holds {"pid", "host", "since"})
    .suite.json          the ids of the jobs of the suite's last ``harness run`` (its current
                         configuration): the leaderboard shows those jobs only

A job directory appears only through ``os.rename`` of a complete temporary directory, so a killed run
never leaves a partial result that looks finished. A job's lock is an exclusive ``fcntl.flock`` on
its lock file, held through an open descriptor for as long as the run works on the job: taking it
is one atomic system call, and the kernel drops it when the process dies, so a killed run's lock
frees itself (no stale-lock takeover, no race between checking and taking). Release unlinks the
file while still holding it; a claimer that locked a file already unlinked sees its inode differ
from the path's and tries again, so two runs never hold one job.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import time
import uuid
from pathlib import Path
from typing import Any

from harness.safefiles import Refused, read_json

RESULT = "result.json"
MANIFEST = ".suite.json"
MAX_RESULT_BYTES = 8 * 2**20  # a result.json is a few KiB; what is larger is not one (harness.jsonsafe keeps ours below)
MAX_MANIFEST_BYTES = 64 * 2**20
# errors of the machine (a full disk, a quota, a read-only file system, no permission, I/O): the user
# must act; the CLI says them on one line naming the path (exit 2), never as a bug
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EMFILE,
                            errno.ENFILE, errno.EFBIG, errno.ENOMEM, errno.ENAMETOOLONG, errno.ESTALE})
MAPPINGS = ("metrics", "metric_info", "main_scores", "reference_rows", "skipped", "env", "job")


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary file and a rename.

    An operating-system error (a full disk, a read-only or vanished directory) is raised as an
    ``OSError`` that names ``path`` (``filename``), with nothing half-written left behind.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n"
    try:
        _write_bytes(tmp, text.encode("utf-8"))
        os.replace(tmp, path)
    except OSError as exc:
        with_path = OSError(exc.errno, exc.strerror or str(exc), str(path))
        try:
            tmp.unlink()
        except OSError:
            pass
        raise with_path from exc


def check_result(data: Any) -> str | None:
    """Why ``data`` (a parsed result.json) is not a result the store can use, or None."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    if data.get("status") not in ("ok", "failed"):
        return "status must be 'ok' or 'failed'"
    for key in MAPPINGS:
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"{key} must be a mapping"
    if not all(isinstance(v, dict) and isinstance(v.get("key"), str) for v in (data.get("main_scores") or {}).values()):
        return "main_scores must map evaluations to mappings with a key"
    if data.get("error") is not None and not isinstance(data["error"], str):
        return "error must be a string"
    return None


def read_result_checked(job_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(result, None) for a usable result.json; (None, None) when there is none; (None, why) when it is damaged.

    Read as hostile data (``harness.safefiles``): a symbolic link, FIFO or device is never opened
    for reading, a file over ``MAX_RESULT_BYTES`` is not read, a document of the wrong shape is refused.
    """
    path = job_dir / RESULT
    try:
        data = read_json(path, MAX_RESULT_BYTES)
    except FileNotFoundError:
        return None, None
    except NotADirectoryError:
        return None, f"{job_dir} is not a directory"
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    except Refused as exc:
        return None, str(exc)
    why = check_result(data)
    return (None, why) if why else (data, None)


def read_result(job_dir: Path) -> dict[str, Any] | None:
    """The job's result, or None when it has none or it is damaged (``read_result_checked`` says why)."""
    return read_result_checked(job_dir)[0]


def read_manifest(suite_dir: Path) -> set[str] | None:
    """The job ids ``.suite.json`` records as the suite's current configuration; None when there is
    no such file; ``Refused`` when it is damaged."""
    try:
        data = read_json(suite_dir / MANIFEST, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Refused(f"cannot read: {exc.strerror or exc}") from None
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, list) or not all(isinstance(j, str) and 0 < len(j) <= 64 for j in jobs):
        raise Refused("expected an object whose 'jobs' is a list of job ids")
    return set(jobs)


def manifest_displays(suite_dir: Path) -> dict[str, str]:
    """job id -> its one-line description, as ``.suite.json`` records them ({} when absent or damaged)."""
    try:
        data = read_json(suite_dir / MANIFEST, MAX_MANIFEST_BYTES)
    except (OSError, Refused):
        return {}
    shown = data.get("displays") if isinstance(data, dict) else None
    return {k: v for k, v in shown.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(shown, dict) else {}


def _remove(path: Path) -> None:
    """Remove ``path`` whatever it is (a directory tree, a file, a link: never what a link points to)."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except OSError:
        pass


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
        self.damaged: dict[str, str] = {}  # job id -> why its result.json could not be used (it runs again)

    # ---------------------------------------------------------------- results
    def job_dir(self, job_id: str) -> Path:
        return self.dir / job_id

    def status(self, job_id: str) -> str | None:
        """``"ok"`` / ``"failed"`` for a finished job, else None (also for a damaged result, noted in ``damaged``)."""
        result, why = read_result_checked(self.job_dir(job_id))
        if why is not None:
            self.damaged[job_id] = why
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
        """Move a complete temporary job directory into place (replacing an older result, or
        whatever else had the job's name: a file, a link)."""
        final = self.job_dir(job_id)
        if os.path.lexists(final):
            trash = self.tmp_dir / f"{job_id}.old.{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            os.rename(tmp, final)
            _remove(trash)
        else:
            os.rename(tmp, final)
        return final

    def record_current(self, suite: str, job_ids: list[str], displays: dict[str, str] | None = None) -> None:
        """Write ``.suite.json``: the jobs of the suite as this run defines it (``harness run``
        rewrites it each time), so the leaderboard never pools an edited suite's old jobs with its new ones."""
        if os.path.isdir(self.dir / MANIFEST) and not os.path.islink(self.dir / MANIFEST):
            _remove(self.dir / MANIFEST)  # something planted at its name; a file or link is simply replaced
        write_json_atomic(self.dir / MANIFEST, {
            "suite": suite,
            "about": "the jobs of the last `harness run` of this suite; `harness leaderboard` shows only these",
            "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "jobs": list(dict.fromkeys(job_ids)),
            "displays": {k: str(v)[:300] for k, v in (displays or {}).items() if k in set(job_ids)},
        })

    # ---------------------------------------------------------------- locks
    def _lock_path(self, job_id: str) -> Path:
        return self.lock_dir / f"{job_id}.lock"

    def claim(self, job_id: str) -> bool:
        """Take the job's lock; False when another live run (or another claim in this process) holds it."""
        if job_id in self._held:
            return False
        path = self._lock_path(job_id)
        for _ in range(3):
            fd = self._open_lock(path)
            if fd is None:
                continue
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

    @staticmethod
    def _open_lock(path: Path) -> int | None:
        """A descriptor of the lock file, created if need be; None after removing something at its
        name that is not a regular file (a symbolic link is never followed, a FIFO never opened for
        writing into, so a planted link cannot make a claim truncate another file)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise
            _remove(path)
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            _remove(path)
            return None
        return fd

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
                _remove(tmp)
                continue
            try:
                pid = int(parts[1])
            except (IndexError, ValueError):
                continue
            if pid != os.getpid() and not _pid_alive(pid):
                _remove(tmp)
