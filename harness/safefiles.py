"""Read the files of a run directory as data that may be hostile: bounded, never following a link.

A run directory is plain files anyone could have edited, copied or replaced: a ``result.json`` may
be a symbolic link to ``/dev/zero``, a FIFO (``open`` would wait forever for a writer), a
directory, gigabytes of JSON, or a document nested thousands deep; an ``embeddings/<set>.npz`` may
be a zip bomb, hold a pickled object, or declare a shape its data does not have. Everything here
opens a path with ``O_NOFOLLOW | O_NONBLOCK`` (a final symbolic link is refused, a FIFO never
blocks) and checks ``S_ISREG`` on the descriptor it will read (no check-then-open race), reads at
most ``limit`` bytes whatever the file's size claims, and raises ``Refused`` (a ``ValueError``)
with a short reason that callers put after the file's name on one line.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

MAX_DEPTH = 64  # nesting of a JSON document we read (a result.json is under 10 deep)
MAX_INT_DIGITS = 30  # an integer literal with more digits is refused (seeds, steps, counts are shorter)
MAX_MEMBERS = 64  # arrays in one .npz (the harness writes three)
FLOAT_KINDS = "f"  # embedding arrays: floating point only (no objects, no strings, no complex)


class Refused(ValueError):
    """A file that is not what it should be; ``str()`` is the reason, without the path."""


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFDIR: "a directory", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}


def kind_of(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def open_regular(path: str | Path) -> int:
    """A read-only descriptor of ``path``, which must be a regular file and not a symbolic link.

    ``OSError`` for a missing or unreadable file; ``Refused`` for anything that is not a regular file.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused("a symbolic link, never followed: expected a regular file") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise Refused(f"{kind_of(mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_regular(path: str | Path) -> bool:
    """Whether ``path`` itself (not a link's target) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_bytes(path: str | Path, limit: int) -> bytes:
    """The whole file, at most ``limit`` bytes (``Refused`` beyond, whatever its size claims)."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        if os.fstat(fh.fileno()).st_size > limit:
            raise Refused(f"larger than {_size(limit)}")
        data = fh.read(limit + 1)
    if len(data) > limit:  # it grew while we read, or lied about its size
        raise Refused(f"larger than {_size(limit)}")
    return data


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 else f"{n} bytes"


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise Refused(f"holds an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise Refused(f"holds a number out of range ({text[:20]}{'…' if len(text) > 20 else ''})")
    return value


def depth_ok(data: Any, max_depth: int = MAX_DEPTH) -> bool:
    """True when no container is nested deeper than ``max_depth`` (iterative: no recursion)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > max_depth:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True


def parse_json(data: bytes) -> Any:
    """A JSON document from bytes: UTF-8, at most ``MAX_DEPTH`` deep, no integer of more than
    ``MAX_INT_DIGITS`` digits, no literal that overflows a float (``1e400``); ``NaN`` and
    ``Infinity`` (what ``json.dumps`` writes for them) are accepted. ``Refused`` otherwise."""
    try:
        value = json.loads(data.decode("utf-8"), parse_int=_parse_int, parse_float=_parse_float)
    except UnicodeDecodeError as exc:
        raise Refused(f"not UTF-8 text at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise Refused(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise Refused(f"nested too deep; at most {MAX_DEPTH} levels") from None
    except Refused:
        raise
    except ValueError as exc:  # e.g. Python's limit on integer string conversion
        raise Refused(" ".join(str(exc).split())[:200]) from None
    if not depth_ok(value):
        raise Refused(f"nested too deep; at most {MAX_DEPTH} levels")
    return value


def read_json(path: str | Path, limit: int) -> Any:
    """``parse_json`` of the file at ``path`` read with ``read_bytes``."""
    return parse_json(read_bytes(path, limit))


def read_lines(path: str | Path, limit: int) -> list[str]:
    """The text lines of a log file (invalid UTF-8 replaced), at most ``limit`` bytes of it."""
    return read_bytes(path, limit).decode("utf-8", errors="replace").splitlines()


# ------------------------------------------------------------------------------------ .npz files


def _member(zf: zipfile.ZipFile, name: str, limit: int):
    """(stream positioned at the data, shape, dtype) of array ``name`` of an open ``.npz``."""
    try:
        info = zf.getinfo(f"{name}.npy")
    except KeyError:
        raise Refused(f"no array {name!r}") from None
    if info.file_size > limit:
        raise Refused(f"array {name!r} is {_size(info.file_size)} (at most {_size(limit)})")
    try:
        stream = zf.open(info)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
        raise Refused(f"array {name!r}: damaged archive ({' '.join(str(exc).split())[:120]})") from None
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise Refused(f"array {name!r}: unknown .npy version {version}")
    except Refused:
        stream.close()
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
        stream.close()
        raise Refused(f"array {name!r}: not a .npy array ({' '.join(str(exc).split())[:120]})") from None
    if dtype.hasobject:
        stream.close()
        raise Refused(f"array {name!r} holds Python objects (pickled data is never loaded)")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > limit or nbytes > info.file_size:
        stream.close()
        raise Refused(f"array {name!r} declares shape {shape} of {dtype}, more than the file holds")
    if fortran and len(shape) > 1:
        stream.close()
        raise Refused(f"array {name!r} is in Fortran order (the harness writes C order)")
    return stream, tuple(shape), dtype


def npz_names(path: str | Path) -> list[str]:
    """The array names of an ``.npz`` file."""
    with _open_zip(path) as zf:
        return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


class _open_zip:
    """An ``.npz`` (a zip archive) opened with ``open_regular``; at most ``MAX_MEMBERS`` members."""

    def __init__(self, path: str | Path):
        self.fh = os.fdopen(open_regular(path), "rb")
        try:
            end = zipfile._EndRecData(self.fh)  # the end record: how many members, before reading their list
            if end is None:
                raise zipfile.BadZipFile("no end of central directory")
            if end[zipfile._ECD_ENTRIES_TOTAL] > MAX_MEMBERS:
                raise Refused(f"an archive of {end[zipfile._ECD_ENTRIES_TOTAL]} members (at most {MAX_MEMBERS})")
            self.zf = zipfile.ZipFile(self.fh)
        except Refused:
            self.fh.close()
            raise
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            self.fh.close()
            raise Refused(f"not an .npz archive ({' '.join(str(exc).split())[:120]})") from None

    def __enter__(self) -> zipfile.ZipFile:
        return self.zf

    def __exit__(self, *exc) -> None:
        self.zf.close()
        self.fh.close()


def load_npz(path: str | Path, names: list[str], limit: int, optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays ``names`` (and those of ``optional`` present) of an ``.npz``, each at most ``limit``
    bytes, never unpickling; ``Refused`` for a damaged or hostile file."""
    out: dict[str, np.ndarray] = {}
    with _open_zip(path) as zf:
        present = {n[:-4] for n in zf.namelist()}
        for name in [*names, *(n for n in optional if n in present)]:
            stream, shape, dtype = _member(zf, name, limit)
            with stream:
                out[name] = _read_exact(stream, name, shape, dtype)
    return out


def _read_exact(stream, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    nbytes = math.prod(shape) * dtype.itemsize
    try:
        data = stream.read(nbytes)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:  # e.g. a bad CRC, truncated data
        raise Refused(f"array {name!r}: damaged data ({' '.join(str(exc).split())[:120]})") from None
    if len(data) != nbytes:
        raise Refused(f"array {name!r}: {len(data)} bytes of data for shape {shape} of {dtype}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def npz_rows(path: str | Path, name: str, max_values: int, limit: int, rng: np.random.Generator,
             min_rows: int = 1, max_dims: int = 4096) -> tuple[np.ndarray, int]:
    """(rows, total rows) of the 2-D floating-point array ``name`` of (n, d), d at most ``max_dims``:
    every row when it has at most ``max(min_rows, max_values // d)``, else that many rows drawn at
    random (kept in order), read chunk by chunk so memory stays bounded whatever the array's size
    (at most ``limit`` bytes)."""
    with _open_zip(path) as zf:
        stream, shape, dtype = _member(zf, name, limit)
        with stream:
            if len(shape) != 2 or dtype.kind not in FLOAT_KINDS:
                raise Refused(f"array {name!r} is {dtype} of shape {shape}, not a 2-D float matrix")
            n, d = shape
            if not 0 < d <= max_dims:
                raise Refused(f"array {name!r} has {d} dimensions (1 to {max_dims})")
            max_rows = max(min_rows, max_values // d)
            if n <= max_rows:
                return _read_exact(stream, name, shape, dtype), n
            keep = np.sort(rng.choice(n, max_rows, replace=False))
            row_bytes = d * dtype.itemsize
            chunk = max(1, 2**22 // max(1, row_bytes))
            out, start = [], 0
            while start < n:
                count = min(chunk, n - start)
                block = _read_exact(stream, name, (count, d), dtype)
                hit = keep[(keep >= start) & (keep < start + count)] - start
                out.append(block[hit])
                start += count
            return np.concatenate(out), n
