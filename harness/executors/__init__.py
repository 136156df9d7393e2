"""Executors: run a suite's jobs (``local``: in this process; ``ray``: as Ray tasks) and keep the store
consistent. ``driver`` decides what runs and in which stage, ``common`` holds what every executor
shares, ``local`` / ``ray_executor`` / ``ray_train`` run jobs, ``ray_cluster`` starts or joins Ray.
"""

from harness.executors.common import Summary, acquire, describe, plan, record
from harness.executors.driver import open_store, run_grid, run_suite

__all__ = ["Summary", "acquire", "describe", "open_store", "plan", "record", "run_grid", "run_suite"]
