"""Peak memory of a job's training, for its result's ``env``."""

from __future__ import annotations

from typing import Any

import torch


def _proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux ``clear_refs``); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """This process's peak memory from construction to ``read()``, for a result's ``env``.

    CPU: the resident set's high-water mark (``VmHWM``), reset at construction where Linux allows
    it, so it is this job's peak; otherwise it is the process's lifetime peak (``ru_maxrss``).
    CUDA: the caching allocator's peak of allocated bytes on the device.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset = reset_peak_rss()
        self.start = _proc_status_bytes("VmRSS")
        self.cuda_start = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.cuda_start = torch.cuda.memory_allocated(device)

    def read(self, workers: int = 1) -> dict[str, Any]:
        """``peak_rss_mb`` (its scope, and the rise above the start), ``cuda_peak_mb`` on CUDA, and
        with ``workers`` > 1 each worker's peaks (every worker must call it)."""
        out = self._rss()
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            out["cuda_peak_mb"] = round(peak / 2**20, 1)
            out["cuda_peak_above_start_mb"] = round(max(0, peak - self.cuda_start) / 2**20, 1)
        if workers > 1:
            _add_per_worker(out, workers)
        return out

    def _rss(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        peak = _proc_status_bytes("VmHWM") if self.reset else None
        if peak is None:
            import resource
            import sys

            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = maxrss if sys.platform == "darwin" else maxrss * 1024
        out["peak_rss_mb"] = round(peak / 2**20, 1)
        out["peak_rss_scope"] = "train" if self.reset else "process"
        if self.reset and self.start is not None:
            out["peak_rss_above_start_mb"] = round(max(0, peak - self.start) / 2**20, 1)
        return out


def _add_per_worker(out: dict[str, Any], workers: int) -> None:
    """``<key>_per_worker``: every worker's ``peak_rss_mb`` and ``cuda_peak_mb``, in rank order."""
    import torch.distributed as dist

    every: list[Any] = [None] * workers
    dist.all_gather_object(every, {k: out[k] for k in ("peak_rss_mb", "cuda_peak_mb") if k in out})
    for key in ("peak_rss_mb", "cuda_peak_mb"):
        if key in out:
            out[f"{key}_per_worker"] = [e[key] for e in every]
