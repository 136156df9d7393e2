"""The ``Job`` record: everything one train-and-evaluate run needs, as plain data.

Its id is a stable short hash of what determines its numbers (plugin names and resolved params,
train config, seed, evaluations), so re-running a suite finds the jobs it already finished.
Labels, the suite name, what is saved and logged, how often a checkpoint is written
(``train.checkpoint_every``), the resources, the suite's choice of main score and the tuning
records do not change the numbers and are left out; the evaluation split does (only a tuning trial
has one other than ``test``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


NOT_IN_ID = ("checkpoint_every",)  # train keys that never change a job's numbers


def _canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=repr)


@dataclass(frozen=True)
class PluginSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def display(self) -> str:
        return self.label or self.name

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params}

    def __hash__(self) -> int:  # params is a dict: hash the record's canonical JSON instead
        return hash(_canonical({**self.identity(), "label": self.label}))


@dataclass(frozen=True)
class Job:
    suite: str
    objective: PluginSpec
    encoder: PluginSpec
    dataset: PluginSpec
    train: dict[str, Any]
    seed: int
    evaluations: list[PluginSpec]
    save: list[str] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    main_score: str | None = None  # the suite's explicit main score, "<evaluation>.<key>" (not in the id)
    # Replicates (suite ``replicates: N``): replicate r is world draw r (the dataset's ``seed`` param,
    # in the id through the dataset's params) trained with seed r. Not in the id itself.
    replicate: int | None = None
    reference: str | None = None  # the suite's reference objective for planned contrasts (not in the id)
    # Tuning (harness.tuning). A stage-1 job evaluates on the dataset's validation split (in the id)
    # and records the values it tries; a final job of a tuned suite records the chosen values.
    split: str = "test"
    stage: str | None = None  # "tune" for a tuning trial
    trial: dict[str, Any] | None = None  # {"train.lr": 0.001, "params.temperature": 0.05}
    tuned: dict[str, Any] | None = None  # the chosen values
    tuning: dict[str, Any] | None = None  # {"trials": n, "seeds": [...], "metric": "<column>"}
    log: list[str] = field(default_factory=list)  # the suite's ``log`` (curves: ["tensorboard"]); not in the id

    def identity(self) -> dict[str, Any]:
        identity = {
            "objective": self.objective.identity(),
            "encoder": self.encoder.identity(),
            "dataset": self.dataset.identity(),
            "train": {k: v for k, v in self.train.items() if k not in NOT_IN_ID},
            "seed": self.seed,
            "evaluations": [e.identity() for e in self.evaluations],
        }
        if self.split != "test":  # evaluated on other sets: other numbers (absent for test: ids stay as they were)
            identity["split"] = self.split
        return identity

    @property
    def id(self) -> str:
        """12 hex digits of the SHA-256 of the identity's canonical JSON (sorted keys, no spaces)."""
        return hashlib.sha256(_canonical(self.identity()).encode()).hexdigest()[:12]

    def __hash__(self) -> int:  # equal jobs have equal ids; the dict fields make the default hash fail
        return hash(self.id)

    @property
    def display(self) -> str:
        trial = ", ".join(f"{k}={v}" for k, v in (self.trial or {}).items())
        prefix = f"tune [{trial}] " if self.stage == "tune" else ""
        return f"{prefix}{self.objective.display} | {self.encoder.display} | {self.dataset.display} | seed {self.seed}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["log"]:  # records of suites that log nothing are what they were before ``log`` existed
            del d["log"]
        d["id"] = self.id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Job":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for key in ("objective", "encoder", "dataset"):
            d[key] = PluginSpec(**d[key])
        d["evaluations"] = [PluginSpec(**e) for e in d["evaluations"]]
        return cls(**d)
