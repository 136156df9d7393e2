"""Plugin contract v2: loss extras by declaration, ``harness.testing`` checks, validate-time refusals.

Every registered built-in is run through every rule of ``harness.testing``, one pytest case per
(built-in, rule) (so a new built-in is covered without editing a list), broken plugins are caught
with a one-line reason per violated rule (all of them, not only the first), and a job delivers
exactly the extras a loss declares, once per optimizer step.
"""

from __future__ import annotations

import io
import re
import sys
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import fakes
import harness
from harness import hookimpl
from harness.errors import HarnessError
from harness.registry import DISTRIBUTION, Registry, set_registry
from harness.runner import run_job
from harness.suite import expand, parse_suite
from harness.testing import (
    LOSS_CHECKS,
    ChecksFailed,
    PluginCase,
    check_dataset,
    check_encoder,
    check_evaluation,
    check_loss,
    check_loss_deterministic,
    parametrize_with_checks,
    plugin_checks,
)
from harness.types import Loss

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ every built-in fits its contract


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _files_params(tmp_path) -> dict:
    (tmp_path / "img").mkdir()
    rows = ["filepath,title"]
    for i in range(6):
        (tmp_path / "img" / f"{i}.png").write_bytes(_png(40 * i))
        rows.append(f"img/{i}.png,grey level {i}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return {"path": str(tmp_path / "pairs.csv"), "image_size": 16}


def _clip_benchmark_params(tmp_path) -> dict:
    root = tmp_path / "wds"
    (root / "test").mkdir(parents=True)
    (root / "test" / "nshards.txt").write_text("1")
    (root / "classnames.txt").write_text("dark\nlight\n")
    (root / "zeroshot_classification_templates.txt").write_text("a {c} image\n")
    with tarfile.open(root / "test" / "0.tar", "w") as tar:
        for i in range(4):
            for name, data in ((f"s{i}.png", _png(60 * i)), (f"s{i}.cls", str(i % 2).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return {"dataset": "wds/tiny", "root": str(root), "image_size": 16}


# Built-ins whose params have no usable default (a file to read) get small data written here; a new
# built-in with a required parameter must add an entry (the test below fails until it does).
REQUIRED_PARAMS = {("dataset", "image_text_files"): _files_params, ("dataset", "clip_benchmark"): _clip_benchmark_params}
SMALL = {("dataset", "shapes"): {"train_size": 64, "eval_size": 32}}
CHECKS = {"loss": check_loss, "encoder": check_encoder, "dataset": check_dataset, "evaluation": check_evaluation}
BUILTINS = [(e.kind, e.name) for kind in Registry(load_entrypoints=False).plugins.values() for e in kind.values()
            if e.distribution == DISTRIBUTION]


def _required_params(registry: Registry, kind: str, name: str, tmp_path) -> dict:
    if "<required>" not in registry.get(kind, name).params.values():
        return {}
    assert (kind, name) in REQUIRED_PARAMS, f"built-in {kind} {name!r} has required params: add test data above"
    return REQUIRED_PARAMS[(kind, name)](tmp_path)


@parametrize_with_checks([PluginCase(kind, name, SMALL.get((kind, name), {})) for kind, name in BUILTINS])
def test_every_builtin_fits_its_contract(plugin, check, tmp_path, use_registry):
    registry = Registry(load_entrypoints=False)
    use_registry(registry)
    check(plugin, **_required_params(registry, plugin.kind, plugin.target, tmp_path))


@pytest.mark.parametrize("kind, name", [("loss", "clip"), ("encoder", "same_modality"), ("dataset", "image_text_files"),
                                        ("evaluation", "retrieval")])
def test_check_kind_runs_every_rule_and_passes_on_a_builtin(kind, name, tmp_path, use_registry):
    registry = Registry(load_entrypoints=False)
    use_registry(registry)
    params = {**SMALL.get((kind, name), {}), **_required_params(registry, kind, name, tmp_path)}
    assert CHECKS[kind](name, **params) is None
    if kind == "loss":
        assert isinstance(registry.get(kind, name).create(), Loss)


def test_parametrize_with_checks_gives_one_readable_case_per_plugin_and_rule():
    pairs = plugin_checks([("loss", "clip"), ("loss", Random, {"scale": 2})])
    ids = [f"{case.id}-{check.__name__}" for case, check in pairs]
    rules = [c.__name__ for c in LOSS_CHECKS]
    assert ids == [f"loss:clip-{r}" for r in rules] + [f"loss:Random(scale=2)-{r}" for r in rules]
    assert len(set(rules)) == len(rules) >= 8 and all(r.startswith("check_loss_") for r in rules)
    with pytest.raises(ValueError, match="unknown plugin kind 'metric'"):
        plugin_checks([("metric", "x")])


# ------------------------------------------------------------------ broken plugins are caught


class Bare(torch.nn.Module):
    def forward(self, x, y):
        return (x * y).sum(1).mean()  # a bare tensor, not a dict of terms


class UnknownExtra(torch.nn.Module):
    extras = ("step", "epoch")

    def forward(self, x, y, **extras):
        return {"l": (x * y).sum()}


class Undeclared(torch.nn.Module):
    extras = ("step",)

    def forward(self, x, y):  # does not accept the extra it declares
        return {"l": (x * y).sum()}


class NaNLoss(torch.nn.Module):
    def forward(self, x, y):
        return {"l": (x * y).sum() * float("nan")}


class InPlace(torch.nn.Module):
    def forward(self, x, y):
        x.data.mul_(2)
        return {"l": (x * y).sum()}


class Random(torch.nn.Module):
    def forward(self, x, y):
        return {"l": (x * y).sum() + torch.rand(())}


class Detached(torch.nn.Module):
    def forward(self, x, y):
        return {"l": (x * y).sum().detach()}


class Downcast(torch.nn.Module):
    def forward(self, x, y):
        return {"l": (x.half() * y.half()).sum()}


class Matrix(torch.nn.Module):
    def forward(self, x, y):
        return {"l": x @ y.T}


class NaNForOne(torch.nn.Module):
    def forward(self, x, y):
        x, y = x.float() if x.dtype == torch.bfloat16 else x, y.float() if y.dtype == torch.bfloat16 else y
        off = (x @ y.T).masked_fill(torch.eye(len(x), dtype=torch.bool), float("nan"))
        return {"l": torch.nanmean(off)}  # no negatives for one pair: NaN


@pytest.mark.parametrize("factory, rule, reason", [
    (Bare, "returns_terms", "must return a non-empty dict of named scalar terms, got Tensor"),
    (UnknownExtra, "declares_known_extras", "declares an unknown extra 'epoch'"),
    (Undeclared, "declares_known_extras", "declares the extra 'step' but forward\\(\\) does not accept it"),
    (NaNLoss, "float32", "term 'l' is not finite"),
    (InPlace, "inputs_unchanged", "modified its input image_features in place"),
    (Random, "deterministic", "not deterministic"),
    (Detached, "gradients", "do not depend on the inputs"),
    (Downcast, "float32", "term 'l' is torch.float16 for torch.float32 inputs"),
    (Matrix, "returns_terms", "term 'l' must be a scalar tensor, got \\(8, 8\\)"),
    (NaNForOne, "batch_of_one", "a batch of one gives non-finite terms; raise ValueError"),
])
def test_check_loss_names_the_violation_on_one_line(factory, rule, reason):
    with pytest.raises(ChecksFailed, match=reason) as info:
        check_loss(factory)
    failures = dict(info.value.failures)
    assert f"check_loss_{rule}" in failures and re.search(reason, failures[f"check_loss_{rule}"])
    for message in failures.values():
        assert "\n" not in message and message.startswith(f"loss {factory.__name__}: ")
    assert all(line.startswith(f"loss {factory.__name__}: ") for line in str(info.value).splitlines())


class TwoFaults(torch.nn.Module):
    """Declares an extra no loss may ask for and is not deterministic: two independent violations."""

    extras = ("epoch",)

    def forward(self, x, y, **extras):
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        return {"l": (x.to(dtype) * y.to(dtype)).sum() + torch.rand((), dtype=dtype)}


def test_check_loss_reports_every_violated_rule_not_only_the_first():
    with pytest.raises(AssertionError) as info:
        check_loss(TwoFaults)
    failed = [name for name, _ in info.value.failures]
    assert failed == ["check_loss_declares_known_extras", "check_loss_deterministic"]
    lines = str(info.value).splitlines()
    assert lines == [
        "loss TwoFaults: declares an unknown extra 'epoch'; known extras: step, total_steps, image_raw, text_raw, "
        "text_negatives, index, caption_group, image_momentum, text_momentum [check_loss_declares_known_extras]",
        "loss TwoFaults: not deterministic: term 'l' differs between two fresh instances fed the same batches "
        "(call 1, torch.float32, cpu) [check_loss_deterministic]",
    ]


def test_one_rule_runs_on_a_built_plugin_and_on_a_case():
    with pytest.raises(AssertionError, match=r"^loss Random: not deterministic"):
        check_loss_deterministic(Random())
    assert check_loss_deterministic(harness.create_loss("clip")) is None
    pairs = dict((check.__name__, (case, check)) for case, check in plugin_checks([("loss", Random)]))
    case, check = pairs["check_loss_deterministic"]
    with pytest.raises(AssertionError, match=r"^loss Random: not deterministic"):
        check(case)
    case, check = pairs["check_loss_gradients"]
    assert check(case) is None


def test_check_loss_refuses_bad_params_like_the_registry():
    with pytest.raises(AssertionError, match=r"its params are refused: .*temperature.*greater than or equal to 0\.01"):
        check_loss("clip", temperature=0.001)


def test_checks_catch_broken_encoders_datasets_and_evaluations():
    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.image, self.text = torch.nn.Linear(3, 4), torch.nn.Linear(3, 5)

    class Mismatch:  # the towers disagree on d
        pair_modality, precision = "text", None

        def __init__(self):
            self.model = Tower()

        def preprocess_images(self, images, train):
            return torch.from_numpy(images).float().mean(dim=(1, 2))

        def pair_inputs(self, images, captions, train):
            return self.tokenize(captions)

        def tokenize(self, texts):
            return torch.ones(len(texts), 3)

        def encode_image(self, x):
            return self.model.image(x)

        def encode_pair(self, x):
            return self.model.text(x)

    with pytest.raises(AssertionError, match="returns dimension 5, the image tower 4"):
        check_encoder(Mismatch)

    class BadLabels:
        def train_pairs(self):
            raise ValueError("evaluation only")

        def eval_sets(self):
            return [harness.types.ClassificationSet("c", np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 3]),
                                                    ["a", "b"], ["a {c}"])]

    with pytest.raises(AssertionError, match="set 'c': labels must index classnames"):
        check_dataset(BadLabels)

    class BadLabelsAndSupplies(BadLabels):
        supplies = ("image_negatives",)

    with pytest.raises(ChecksFailed) as info:  # every violated rule, in rule order
        check_dataset(BadLabelsAndSupplies)
    assert [name for name, _ in info.value.failures] == ["check_dataset_eval_sets", "check_dataset_supplies"]
    assert "supplies an unknown extra 'image_negatives'" in str(info.value).splitlines()[1]

    class Dotted:
        metric_info = {"top1": harness.types.MetricInfo("t", "downstream", True)}

        def evaluate(self, ctx):
            return {"set.a": {"top1": 0.5}}

    with pytest.raises(AssertionError, match="without dots"):
        check_evaluation(Dotted)

    class Undescribed:
        metric_info = {}

        def evaluate(self, ctx):
            return {"score": 0.5}

    with pytest.raises(AssertionError, match="result key 'score' has no metric_info entry"):
        check_evaluation(Undescribed)


# ------------------------------------------------------------------ extras reach the loss in training


class ExtrasLoss(torch.nn.Module):
    """Checks every extra it receives against what the trainer must send (test only)."""

    extras = ("step", "total_steps", "image_raw", "text_raw", "text_negatives")
    calls: list[dict] = []

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.register_buffer("logit_scale", torch.tensor(1 / temperature).log())

    def forward(self, x, y, *, step, total_steps, image_raw, text_raw, text_negatives):
        ExtrasLoss.calls.append({
            "step": step, "total_steps": total_steps,
            "raw_matches": bool(torch.allclose(F.normalize(image_raw, dim=-1), x, atol=1e-6)
                                and torch.allclose(F.normalize(text_raw, dim=-1), y, atol=1e-6)),
            "in_graph": image_raw.requires_grad and text_raw.requires_grad and text_negatives.requires_grad,
            "negatives": tuple(text_negatives.shape),
            "unit_norm": bool(torch.allclose(text_negatives.norm(dim=-1), torch.ones(()), atol=1e-5)),
        })
        logits = self.logit_scale.exp() * torch.cat([x @ y.T, torch.einsum("nd,nkd->nk", x, text_negatives)], 1)
        return {"contrastive": F.cross_entropy(logits, torch.arange(len(x)))}


class StepLoss(torch.nn.Module):
    """Declares the step counters only."""

    extras = ("step", "total_steps")

    def forward(self, x, y, step, total_steps):
        return {"contrastive": -(x * y).sum(1).mean() * (1 + step / total_steps)}


class BareLoss(torch.nn.Module):
    """Returns a bare tensor (test only)."""

    def forward(self, x, y):
        return -(x * y).sum(1).mean()


class NegativePairs:
    def __init__(self, n: int = 64):
        rng = np.random.default_rng(0)
        self.labels = rng.integers(0, 4, n)
        self.images = np.clip(rng.normal(60 * self.labels[:, None, None, None], 20, (n, 4, 4, 3)), 0, 255).astype(np.uint8)

    def __len__(self):
        return len(self.labels)

    def get_batch(self, indices, rng):
        return self.images[indices], [f"shade {self.labels[i]}" for i in indices]

    def get_batch_with_negatives(self, indices, rng):
        images, captions = self.get_batch(indices, rng)
        return images, captions, [[f"shade {(self.labels[i] + k) % 4}" for k in (1, 2)] for i in indices]


class NegativesData:
    """Supplies two hard-negative captions per pair (test only)."""

    supplies = ("text_negatives",)

    def __init__(self, n: int = 64):
        self.pairs = NegativePairs(n)

    def train_pairs(self):
        return self.pairs

    def eval_sets(self):
        p = self.pairs
        return [harness.types.RetrievalSet("retrieval", p.images[:16], [[f"shade {l}"] for l in p.labels[:16]])]


class ExtrasPlugins:
    @staticmethod
    @hookimpl
    def harness_register_losses(register):
        register("extras_loss", ExtrasLoss)
        register("step_loss", StepLoss)
        register("bare_loss", BareLoss)
        register("unknown_extra", UnknownExtra)

    @staticmethod
    @hookimpl
    def harness_register_datasets(register):
        register("negatives_data", NegativesData)


@pytest.fixture
def registry(tmp_path, monkeypatch):
    site = fakes.install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", fakes.DIST)
    reg = Registry(extra_plugins=[(ExtrasPlugins, "extras-test")])
    set_registry(reg)
    yield reg
    set_registry(None)
    sys.modules.pop(fakes.MODULE, None)


def _suite(objective: str, dataset: str = "negatives_data", steps: int = 6) -> dict:
    return {"name": "extras", "objectives": [objective], "encoders": ["toy_linear"], "datasets": [dataset],
            "train": {"steps": steps, "batch_size": 8, "lr": 0.01}, "evaluations": ["gap"]}


def test_a_job_passes_exactly_the_declared_extras_once_per_step(registry, tmp_path):
    ExtrasLoss.calls.clear()
    (job,) = expand(parse_suite(_suite("extras_loss")))
    result = run_job(job, tmp_path / "job")
    assert result["status"] == "ok", result["traceback"]
    assert [c["step"] for c in ExtrasLoss.calls] == list(range(6))  # 0-based, one forward per step
    assert all(c["total_steps"] == 6 and c["raw_matches"] and c["in_graph"] and c["unit_norm"] for c in ExtrasLoss.calls)
    assert all(c["negatives"] == (8, 2, 8) for c in ExtrasLoss.calls)  # (N, K, d)


def test_v1_and_step_losses_train_and_only_declared_extras_are_sent(registry, tmp_path):
    for name in ("toy_dot", "step_loss"):  # toy_dot: a v1 forward(x, y), nothing else may be passed
        (job,) = expand(parse_suite(_suite(name, dataset="toy")))
        result = run_job(job, tmp_path / name)
        assert result["status"] == "ok", result["traceback"]


def test_a_loss_returning_a_bare_tensor_fails_its_job_on_one_line(registry, tmp_path):
    (job,) = expand(parse_suite(_suite("bare_loss", dataset="toy")))
    result = run_job(job, tmp_path / "job")
    assert result["status"] == "failed"
    assert result["error"] == "BadLossOutput: loss 'bare_loss' must return a dict of named scalar terms, got a Tensor"


def test_validate_refuses_unknown_extras_and_negatives_a_dataset_cannot_supply(registry, cli, write_suite):
    with pytest.raises(HarnessError, match=r"objectives\[0\]: loss 'unknown_extra' declares an unknown extra 'epoch'; "
                                           r"known extras: step, total_steps, image_raw, text_raw, text_negatives"):
        expand(parse_suite(_suite("unknown_extra")))
    path = write_suite("name: x\nobjectives: [extras_loss]\nencoders: [toy_linear]\ndatasets: [toy]\n"
                       "train: {steps: 1}\nevaluations: [gap]\n")
    code, out, err = cli("validate", str(path))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert (f"error: {path}: objectives[0]: loss 'extras_loss' needs the extra 'text_negatives', which dataset 'toy' "
            f"(datasets[0]) cannot supply; datasets that can: negatives_data") in err
