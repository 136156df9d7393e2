"""Reading local data files safely: paths, brace patterns, webdataset shards, images, small text files.

Data files are input, and input never runs code. So shards are read with ``tarfile`` here, not
with webdataset's decoders (its default handlers unpickle ``.pyd``/``.pickle`` members and
``torch.load`` ``.pth`` ones): only the members a dataset asks for by extension are read, each at
most ``MAX_MEMBER_BYTES``, images are decoded by PIL with its decompression-bomb guard made an
error, and text members are decoded as UTF-8. Every path must be a local regular file (no URL, no
device or FIFO that could block), and brace patterns are counted before they are expanded.
"""

from __future__ import annotations

import io
import math
import os
import re
import tarfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

MAX_FILES = 100_000  # shards a brace pattern may name
MAX_MEMBER_BYTES = 64 << 20  # one image or caption inside a shard
MAX_TEXT_BYTES = 4 << 20  # a small metadata file (class names, templates, shard count)
MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused (PIL's own guard only warns below 2x its limit)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
# A local path: no URL scheme, no quotes, backquotes, "$" or other shell metacharacters, no control characters.
LOCAL_PATH = r"^(?!.*://)[^'\"`$;|&<>\\\x00-\x1f\x7f]+$"


def _brace_groups(pattern: str) -> list[tuple[str, list[str] | tuple[int, int, int]]]:
    """The pattern's ``{...}`` groups, left to right: a list of options or a (lo, hi, width) range."""
    groups = []
    for body in re.findall(r"\{([^{}]*)\}", pattern):
        rng = re.fullmatch(r"(\d{1,9})\.\.(\d{1,9})", body)
        groups.append((body, (int(rng.group(1)), int(rng.group(2)), len(rng.group(1))) if rng else body.split(",")))
    return groups


def count_braces(pattern: str) -> int:
    """How many names ``expand_braces(pattern)`` gives, computed without expanding it."""
    total = 1
    for _, group in _brace_groups(pattern):
        total *= abs(group[1] - group[0]) + 1 if isinstance(group, tuple) else len(group)
    return total


def expand_braces(pattern: str, limit: int = MAX_FILES) -> list[str]:
    """Expand ``{a..b}`` (zero-padded to the width of ``a``) and ``{x,y}`` groups, left to right.

    Raises ``ValueError`` when the pattern would name more than ``limit`` files.
    """
    if count_braces(pattern) > limit:
        raise ValueError(f"path: {pattern!r} names more than {limit:,} files")
    return _expand(pattern)


def _expand(pattern: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail, body = pattern[: match.start()], pattern[match.end():], match.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = int(rng.group(1)), int(rng.group(2))
        width = len(rng.group(1))
        step = 1 if hi >= lo else -1
        options = [str(i).zfill(width) for i in range(lo, hi + step, step)]
    else:
        options = body.split(",")
    return [p for opt in options for p in _expand(head + opt + tail)]


def regular_file(path: str | Path, what: str = "path") -> Path:
    """``path`` if it is an existing regular file (not a device, FIFO or folder), else ``ValueError``."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what}: no such file {str(path)!r}")
    return p


def read_text(path: str | Path, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """A small UTF-8 text file (at most ``limit`` bytes), or ``ValueError`` naming ``what``."""
    p = regular_file(path, what)
    if p.stat().st_size > limit:
        raise ValueError(f"{what}: {p} is larger than {limit >> 20} MiB")
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: cannot read {p} as UTF-8 text ({type(exc).__name__})") from None


def shard_samples(shard: str | Path, wanted: tuple[str, ...]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The samples of a webdataset shard: ``(key, {extension: bytes})`` for the ``wanted`` extensions.

    A sample is the members sharing a key (the path up to the first dot of the file name),
    grouped over the whole shard, in the order keys first appear. Members with another extension
    are never read. ``ValueError`` for an unreadable shard or a member over ``MAX_MEMBER_BYTES``.
    """
    shard = regular_file(shard)
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                ext = ext.lower()
                if not dot or ext not in wanted:
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise ValueError(f"path: member {member.name!r} of {shard} is larger than {MAX_MEMBER_BYTES >> 20} MiB")
                key = f"{folder}/{stem}" if folder else stem
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"path: cannot read shard {str(shard)!r}: {exc}") from None
    yield from samples.items()


def first_image(members: dict[str, bytes]) -> bytes | None:
    return next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)


def load_image(source: str | bytes, image_size: int) -> np.ndarray:
    """Decode an image (a path or bytes) to (S, S, 3) uint8: shorter side to S, centre crop.

    Raises on a file that is not a regular file, not an image, or larger than ``MAX_IMAGE_PIXELS``.
    """
    from PIL import Image, ImageOps

    if not isinstance(source, bytes):
        source = regular_file(source, "image")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            if math.prod(img.size) > MAX_IMAGE_PIXELS:
                raise ValueError(f"image of {img.size[0]}x{img.size[1]} pixels is larger than {MAX_IMAGE_PIXELS:,}")
            img.draft("RGB", (image_size, image_size))  # JPEG: decode at a reduced scale when it can
            rgb = img.convert("RGB")
    return np.asarray(ImageOps.fit(rgb, (image_size, image_size), Image.BICUBIC), dtype=np.uint8)


def decode_all(sources: list, image_size: int) -> list[np.ndarray | None]:
    """Decode images in a thread pool; None for each one that cannot be decoded."""
    from concurrent.futures import ThreadPoolExecutor

    def decode(source):
        try:
            return load_image(source, image_size)
        except Exception:  # counted by the caller: PIL raises many types for bad files
            return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(decode, sources))
