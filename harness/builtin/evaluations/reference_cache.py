"""A disk cache for reference rows: job-independent numbers computed once per world, shared by jobs.

The raw-pixel probe, the arithmetic oracle and the estimated blind oracles depend only on an
evaluation set (and the evaluation's params), never on the job's model, so every job of a suite
would compute the same numbers. With ``EvalContext.cache_dir`` set (the runner fills it with a
directory next to the runs) each is computed once and kept as a small JSON file; without it
(None) they are computed as before, memoised in this process only.

Key: the SHA-256 of the value's kind, ``VERSION`` (bumped whenever reference code changes a
number), the library versions that take part (numpy, and scikit-learn and scipy for the probe),
the parameters that enter the computation and the *content* that determines it (the probe's
pixel features, labels and candidates; the gallery's triplets and attributes...). Content rather
than the dataset's name and params: the same params of a file-backed dataset can name changed
files, and two suites (or splits) with the same world share entries safely.

Layout: ``<cache_dir>/references/<kind>-<key>.json`` holding
``{"format": 1, "key": <key>, "about": {...}, "value": <plain floats>}``, written to a temporary
file and ``os.replace``d, so readers never see a partial file; ``.<kind>-<key>.lock`` is
``flock``ed while one process computes the entry, so concurrent jobs wait for it rather than
compute it again (after ``LOCK_WAIT_S`` they compute it themselves). A file that is not a regular
file (a symlink, a FIFO), is over ``MAX_BYTES``, is not JSON, names another key, or holds a value
of the wrong shape, a non-finite number or a number outside [0, 1] (every reference value is a
rate) is ignored and recomputed; a cache that cannot be written is skipped.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import hashlib
import json
import math
import os
import stat
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

VERSION = "references-1"  # bump when any reference computation changes its numbers
FORMAT = 1
MAX_BYTES = 1 << 20  # a reference entry is a few hundred bytes; anything larger is not ours
MAX_KEYS = 10_000  # of a rows value
LOCK_WAIT_S = 600.0
SUBDIR = "references"
_MEMO: dict[str, Any] = {}  # key -> value, this process's copy (the only cache without a directory)


def library_versions(*names: str) -> dict[str, str]:
    """{distribution: version} of the libraries whose numerics enter a value (read without importing them)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _feed(h: Any, value: Any) -> None:
    """Hash ``value`` unambiguously: numeric arrays by dtype, shape and bytes; the rest as canonical JSON."""
    if isinstance(value, dict):
        h.update(b"{")
        for k in sorted(value, key=str):
            _feed(h, str(k))
            _feed(h, value[k])
        h.update(b"}")
        return
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        arr = np.ascontiguousarray(value)
        h.update(f"array:{arr.dtype.str}:{arr.shape}:".encode())
        h.update(arr.tobytes())
        return
    if isinstance(value, np.ndarray):
        value = value.tolist()
    h.update(json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr).encode())
    h.update(b";")


def content_key(kind: str, params: dict[str, Any], content: dict[str, Any], libraries: tuple[str, ...] = ("numpy",)) -> str:
    """The entry's key: SHA-256 (hex) of the kind, ``VERSION``, library versions, params and content."""
    h = hashlib.sha256()
    _feed(h, {"kind": kind, "version": VERSION, "libraries": library_versions(*libraries), "params": params})
    _feed(h, content)
    return h.hexdigest()


def is_rate(value: Any) -> bool:
    """A plain finite float in [0, 1] (ints allowed; bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0.0 <= value <= 1.0


def is_rows(value: Any) -> bool:
    """``{row: {key: rate}}`` with string keys, at most ``MAX_KEYS`` values in all."""
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        return False
    if sum(len(v) for v in value.values()) > MAX_KEYS:
        return False
    return all(isinstance(row, str) and all(isinstance(k, str) and is_rate(x) for k, x in v.items())
               for row, v in value.items())


def read_entry(path: Path, key: str, valid: Callable[[Any], bool]) -> Any | None:
    """The value stored at ``path`` under ``key``, or None when there is none or it fails any check."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # no symlink; a FIFO does not block
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
                return None
            data = fh.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            return None
        record = json.loads(data, parse_constant=_refuse_constant)  # NaN / Infinity are not values
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("key") != key:
        return None
    value = record.get("value")
    return value if valid(value) else None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite constant {name} in a reference cache entry")


def write_entry(path: Path, record: dict[str, Any]) -> bool:
    """Write ``record`` as JSON to ``path`` through a temporary file and ``os.replace``; False if not possible."""
    try:
        text = json.dumps(record, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError):
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
        os.replace(tmp, path)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False


@contextlib.contextmanager
def entry_lock(path: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (yields True), or yield False when it cannot be had
    within ``wait_s`` seconds or the file cannot be opened. The kernel drops a dead holder's lock."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError:
        yield False
        return
    try:
        deadline, pause = time.monotonic() + wait_s, 0.02
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def cached(cache_dir: str | Path | None, kind: str, key: str, compute: Callable[[], Any],
           valid: Callable[[Any], bool], about: dict[str, Any] | None = None) -> Any:
    """``compute()``'s value for ``key``: from this process's memo, else from ``cache_dir``, else
    computed (and stored when valid). ``valid`` checks a stored value before it is trusted."""
    memo_key = f"{kind}-{key}"
    if memo_key in _MEMO:
        return copy.deepcopy(_MEMO[memo_key])
    value = _cached_on_disk(Path(cache_dir), kind, key, compute, valid, about) if cache_dir is not None else compute()
    if valid(value):
        _MEMO[memo_key] = copy.deepcopy(value)
    return value


def _cached_on_disk(cache_dir: Path, kind: str, key: str, compute: Callable[[], Any],
                    valid: Callable[[Any], bool], about: dict[str, Any] | None) -> Any:
    directory = cache_dir / SUBDIR
    path = directory / f"{kind}-{key}.json"
    value = read_entry(path, key, valid)
    if value is not None:
        return value
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return compute()
    with entry_lock(directory / f".{kind}-{key}.lock") as held:
        if held:  # another job may have written it while we waited
            value = read_entry(path, key, valid)
            if value is not None:
                return value
        value = compute()
        if valid(value):
            write_entry(path, {"format": FORMAT, "key": key, "about": {"kind": kind, **(about or {})}, "value": value})
    return value
