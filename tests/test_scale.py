"""Scale without Ray: GradCache micro-batching (``train.micro_batch``), the worker settings and their checks.

GradCache must give the unchunked gradients: parameters after 3 steps equal the unchunked run's to
1e-5 for every loss the registry holds (built-ins, and ``harness-objectives`` when installed), on
the shipped ``harness-tiny-vit``. The multi-worker runs themselves are in ``test_scale_workers.py``.
"""

from __future__ import annotations

import importlib.util
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import harness.training.loop as loop_mod
from harness.config import Resources, TrainConfig, worker_cpus, worker_gpus
from harness.errors import HarnessError
from harness.registry import get_registry
from harness.runner import seed_everything
from harness.suite import expand, load_suite, parse_suite
from harness.training import GradCacheStep, RandState, train

CPU = torch.device("cpu")
TOL = 1e-5


# ------------------------------------------------------------------ data and models


class NegativesPairs:
    """A pair source that also supplies K hard-negative captions per pair (other rows' captions).

    Wraps any pair source; used when the registry has no dataset that supplies ``text_negatives``.
    """

    def __init__(self, pairs, k: int = 2):
        self.pairs, self.k = pairs, k

    def __len__(self):
        return len(self.pairs)

    def get_batch(self, indices, rng):
        return self.pairs.get_batch(indices, rng)

    def get_batch_with_negatives(self, indices, rng):
        images, captions = self.pairs.get_batch(indices, rng)
        n = len(captions)
        negatives = [[captions[(i + j + 1) % n] + " not" for j in range(self.k)] for i in range(n)]
        return images, captions, negatives


@pytest.fixture(scope="module")
def shapes_pairs():
    return get_registry().create("dataset", "shapes", train_size=48, eval_size=16).train_pairs()


def negatives_source(shapes_pairs):
    """(pair source with negatives, how): the registry's shapes if it supplies them, else a wrapper."""
    reg = get_registry()
    if "text_negatives" in reg.get("dataset", "shapes").supplies:
        return reg.create("dataset", "shapes", train_size=48, eval_size=16).train_pairs(), "shapes"
    return NegativesPairs(shapes_pairs), "test wrapper (shapes does not supply text_negatives yet)"


def run(loss_factory, pairs, micro, *, batch=12, steps=3, lr=5e-4, encoder=None, **cfg):
    """Train harness-tiny-vit (or ``encoder()``) from seed 0; returns (parameters, stats, loss)."""
    seed_everything(0)
    enc = encoder() if encoder else get_registry().create("encoder", "open_clip", model="harness-tiny-vit")
    loss = loss_factory()
    config = TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup=1, grad_clip=1.0, micro_batch=micro, **cfg)
    stats = train(enc, loss, pairs, config, 0, CPU)
    params = [p.detach().clone() for p in list(enc.model.parameters()) + list(loss.parameters())]
    return params, stats, loss


def max_diff(a, b) -> float:
    assert len(a) == len(b)
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))


def registry_losses():
    """Every loss of the built-ins and of harness-objectives (when installed), as pytest params."""
    reg = get_registry()
    out = []
    for name, entry in sorted(reg.plugins["loss"].items()):
        if entry.distribution not in ("contrastive-harness", "harness-objectives"):
            continue
        marks = []
        if any(v == "<required>" for v in entry.params.values()):
            marks.append(pytest.mark.skip(reason=f"loss {name!r} has required params"))
        out.append(pytest.param(name, id=f"{entry.distribution}:{name}", marks=marks))
    return out


# ------------------------------------------------------------------ GradCache equals the unchunked step


@pytest.mark.slow
@pytest.mark.parametrize("name", registry_losses())
def test_micro_batch_gives_the_unchunked_parameters_for_every_loss(name, shapes_pairs):
    """12 pairs in chunks of 5, 5 and 2 (a ragged last chunk), 3 steps, grad clipping on."""
    reg = get_registry()
    entry = reg.get("loss", name)
    pairs = shapes_pairs
    if "text_negatives" in entry.extras:
        pairs, _ = negatives_source(shapes_pairs)
    factory = lambda: reg.create("loss", name)  # noqa: E731
    plain, plain_stats, _ = run(factory, pairs, None)
    chunked, chunked_stats, _ = run(factory, pairs, 5)
    assert chunked_stats["env"]["micro_batch"] == 5 and plain_stats["env"]["micro_batch"] is None
    assert max_diff(plain, chunked) <= TOL
    assert chunked_stats["final_loss"] == pytest.approx(plain_stats["final_loss"], rel=1e-5)


class AllExtras(nn.Module):
    """Uses every extra: CLIP + raw-norm penalties + a hinge on hard negatives; records each call."""

    extras = ("step", "total_steps", "image_raw", "text_raw", "text_negatives")

    def __init__(self):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
        self.calls: list[tuple[int, int, int]] = []

    def forward(self, x, y, *, step, total_steps, image_raw, text_raw, text_negatives):
        self.calls.append((step, total_steps, x.shape[0]))
        logits = self.logit_scale.exp() * x @ y.T
        labels = torch.arange(x.shape[0])
        clip = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        raw = 1e-3 * (image_raw.pow(2).mean() + text_raw.pow(2).mean())
        neg = torch.einsum("nd,nkd->nk", x, text_negatives)
        hinge = F.relu(0.2 + neg - (x * y).sum(-1, keepdim=True)).mean() * (1 + step / total_steps)
        return {"clip": clip, "raw": raw, "hinge": hinge}


def test_every_extra_arrives_once_per_step_for_the_whole_batch(shapes_pairs):
    pairs, _ = negatives_source(shapes_pairs)
    plain, _, plain_loss = run(AllExtras, pairs, None)
    chunked, _, chunked_loss = run(AllExtras, pairs, 4)
    assert chunked_loss.calls == plain_loss.calls == [(0, 3, 12), (1, 3, 12), (2, 3, 12)]
    assert max_diff(plain, chunked) <= TOL


def test_light_augmentation_is_drawn_once_for_the_whole_batch(shapes_pairs):
    """Preprocessing (and its random draws) runs on the whole batch, so augmented runs agree too."""
    make = lambda: get_registry().create("encoder", "open_clip", model="harness-tiny-vit", augment=True)  # noqa: E731
    clip = lambda: get_registry().create("loss", "clip")  # noqa: E731
    plain, _, _ = run(clip, shapes_pairs, None, encoder=make)
    chunked, _, _ = run(clip, shapes_pairs, 4, encoder=make)
    assert max_diff(plain, chunked) <= TOL


def test_micro_batch_at_least_the_batch_is_the_plain_step_bit_for_bit(shapes_pairs):
    clip = lambda: get_registry().create("loss", "clip")  # noqa: E731
    plain, _, _ = run(clip, shapes_pairs, None, steps=2)
    same, stats, _ = run(clip, shapes_pairs, 12, steps=2)
    assert all(torch.equal(a, b) for a, b in zip(plain, same))
    assert stats["env"]["micro_batch"] is None  # no chunking happened


# ------------------------------------------------------------------ randomness replayed per chunk


class DropoutEncoder:
    """Linear towers with dropout on 4x4 images and bag-of-words captions (test only)."""

    pair_modality = "text"
    precision = None

    def __init__(self, p: float = 0.5, batch_norm: bool = False):
        image = [nn.Linear(48, 32), nn.Dropout(p), nn.Linear(32, 8)]
        if batch_norm:
            image.insert(1, nn.BatchNorm1d(32))
        self.model = nn.ModuleDict({"image": nn.Sequential(*image),
                                    "text": nn.Sequential(nn.Linear(64, 32), nn.Dropout(p), nn.Linear(32, 8))})

    def preprocess_images(self, images, train):
        return torch.from_numpy(np.asarray(images)).float().div(255).reshape(len(images), -1)

    def tokenize(self, texts):
        out = torch.zeros(len(texts), 64)
        for i, t in enumerate(texts):
            for w in t.split():
                out[i, zlib.crc32(w.encode()) % 64] += 1
        return out

    def pair_inputs(self, images, captions, train):
        return self.tokenize(captions)

    def encode_image(self, x):
        return self.model["image"](x)

    def encode_pair(self, x):
        return self.model["text"](x)


class ToyPairs:
    def __init__(self, n=24):
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
        self.words = [f"w{i % 7} v{i % 5}" for i in range(n)]

    def __len__(self):
        return len(self.words)

    def get_batch(self, indices, rng):
        return self.images[indices], [self.words[i] for i in indices]


def grads_of(encoder, loss) -> list[torch.Tensor]:
    return [p.grad.clone() for p in list(encoder.model.parameters()) + list(loss.parameters())]


def test_dropout_masks_are_replayed_per_chunk():
    """The chunked gradient is exactly that of the network whose chunks drew their own masks in order:
    the reference embeds the same chunks with graph from the same RNG state. Without the replay
    (``RandState.restore`` a no-op) the second pass draws new masks and the gradients differ."""
    data = ToyPairs().get_batch(np.arange(12), None)
    data = (*data, None)

    def chunked(replay: bool):
        torch.manual_seed(0)
        enc, loss = DropoutEncoder(), get_registry().create("loss", "clip")
        opt = torch.optim.SGD(list(enc.model.parameters()) + list(loss.parameters()), lr=0.1)
        step = GradCacheStep(enc, loss, opt, None, CPU, "fp32", (), 1, "clip", micro=5)
        torch.manual_seed(1)
        if not replay:
            original, RandState.restore = RandState.restore, lambda self: None
        try:
            step(data, 0)
        finally:
            if not replay:
                RandState.restore = original
        return grads_of(enc, loss)

    torch.manual_seed(0)
    enc, loss = DropoutEncoder(), get_registry().create("loss", "clip")
    torch.manual_seed(1)
    x, y = enc.preprocess_images(data[0], True), enc.pair_inputs(data[0], data[1], True)
    # with graph, chunk by chunk, image then text: the draws of GradCache's no-grad pass, in its order
    parts = [(enc.encode_image(x[s:s + 5]), enc.encode_pair(y[s:s + 5])) for s in (0, 5, 10)]
    fx = F.normalize(torch.cat([p[0] for p in parts]), dim=-1)
    fy = F.normalize(torch.cat([p[1] for p in parts]), dim=-1)
    sum(loss(fx, fy).values()).backward()
    reference = grads_of(enc, loss)

    replayed = chunked(replay=True)
    assert max(float((a - b).abs().max()) for a, b in zip(replayed, reference)) <= 1e-6
    not_replayed = chunked(replay=False)
    assert max(float((a - b).abs().max()) for a, b in zip(not_replayed, reference)) > 1e-3


def test_batch_norm_towers_are_refused_with_micro_batch():
    loss = lambda: get_registry().create("loss", "clip")  # noqa: E731
    with pytest.raises(ValueError) as exc:
        run(loss, ToyPairs(), 4, encoder=lambda: DropoutEncoder(p=0.0, batch_norm=True))
    message = str(exc.value)
    assert "\n" not in message and "batch norm" in message and "train.micro_batch 4" in message
    run(loss, ToyPairs(), None, encoder=lambda: DropoutEncoder(p=0.0, batch_norm=True))  # unchunked: as before


# ------------------------------------------------------------------ reduced precision (the GPU paths, on CPU)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_micro_batch_under_autocast_and_the_fp16_grad_scaler(precision, shapes_pairs, monkeypatch):
    """CPU autocast stands in for CUDA's: fp16 also runs torch's GradScaler, scaling the cached
    gradients. Low precision: the chunked run agrees with the unchunked one to rounding only."""
    monkeypatch.setattr(loop_mod, "resolve_precision", lambda requested, device: precision)
    scalers = []
    real = torch.amp.GradScaler

    def spy(*args, **kwargs):
        scalers.append(real(*args, **kwargs))
        return scalers[-1]

    monkeypatch.setattr(torch.amp, "GradScaler", spy)
    clip = lambda: get_registry().create("loss", "clip")  # noqa: E731
    plain, plain_stats, _ = run(clip, shapes_pairs, None, lr=1e-4)
    chunked, chunked_stats, _ = run(clip, shapes_pairs, 4, lr=1e-4)
    assert chunked_stats["precision"] == precision
    assert len(scalers) == (2 if precision == "fp16" else 0)
    if scalers:
        assert all(s.get_scale() > 1 for s in scalers)  # the scaler ran (and skipped no step into NaN)
    assert all(torch.isfinite(p).all() for p in chunked)
    assert chunked_stats["final_loss"] == pytest.approx(plain_stats["final_loss"], rel=2e-3)
    assert max_diff(plain, chunked) <= 2e-3


# ------------------------------------------------------------------ config: bounds, one-line errors, ids


SUITE = """\
name: scale
objectives: [clip]
encoders: [{name: open_clip, params: {model: harness-tiny-vit}}]
datasets: [{name: shapes, params: {train_size: 64, eval_size: 32}}]
train: {steps: 3, batch_size: 16%s}
evaluations: [gap]
resources: {cpus_per_job: 2%s}
"""


def suite_text(train: str = "", resources: str = "") -> str:
    return SUITE % (train, resources)


@pytest.mark.parametrize("train,resources,expected", [
    (", micro_batch: 32", "", "train: micro_batch (32) must be at most batch_size (16)"),
    (", micro_batch: 0", "", "train.micro_batch: Input should be greater than or equal to 1"),
    ("", ", workers_per_job: 3",
     "resources.workers_per_job: 3 workers cannot split train.batch_size 16 evenly"),
    ("", ", workers_per_job: 0", "resources.workers_per_job: Input should be greater than or equal to 1"),
    ("", ", gpus_per_worker: 1", "resources: gpus_per_worker applies to workers_per_job > 1"),
    ("", ", workers_per_job: 2, gpus_per_job: 1, gpus_per_worker: 1",
     "resources: gpus_per_worker 1 x workers_per_job 2 = 2 GPU(s), but gpus_per_job is 1; give only one of them"),
])
def test_bad_scale_settings_are_one_line_exit_2(train, resources, expected, write_suite, cli):
    code, out, err = cli("validate", str(write_suite(suite_text(train, resources))))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err


def test_workers_must_divide_an_objectives_own_batch_size(write_suite):
    text = suite_text(resources=", workers_per_job: 2").replace(
        "objectives: [clip]", "objectives: [clip, {name: cua, train: {batch_size: 9}}]")
    with pytest.raises(HarnessError, match=r"2 workers cannot split objectives\[1\]\.train\.batch_size 9 evenly"):
        expand(load_suite(write_suite(text)))


def test_workers_are_checked_against_the_batch_sizes_jobs_use_when_encoders_set_their_own(write_suite):
    text = suite_text(resources=", workers_per_job: 2").replace("batch_size: 16", "batch_size: 9")
    own = text.replace("params: {model: harness-tiny-vit}}", "params: {model: harness-tiny-vit}, train: {batch_size: 8}}")
    assert {job.train["batch_size"] for job in expand(load_suite(write_suite(own)))} == {8}  # 9 is used by no job
    with pytest.raises(HarnessError, match=r"2 workers cannot split train\.batch_size 9 evenly"):
        expand(load_suite(write_suite(text, "plain.yaml")))  # without the encoder's own: refused as before
    odd = own.replace("train: {batch_size: 8}", "train: {batch_size: 7}")
    with pytest.raises(HarnessError, match=r"2 workers cannot split encoders\[0\]\.train\.batch_size 7 evenly"):
        expand(load_suite(write_suite(odd, "odd.yaml")))


def test_without_ray_train_a_suite_with_workers_exits_2_saying_what_to_install(write_suite, cli, monkeypatch):
    from harness import optional

    monkeypatch.setattr(optional, "RAY_TRAIN_MODULES", optional.RAY_TRAIN_MODULES + ("no_such_module_xyz",))
    path = str(write_suite(suite_text(resources=", workers_per_job: 2")))
    for argv in (("validate", path), ("run", path, "--out", str(path) + ".runs")):
        code, out, err = cli(*argv)
        assert code == 2
        assert err.strip() == f"error: {path}: {optional.RAY_TRAIN_MISSING}"
    code, _, err = cli("validate", str(write_suite(suite_text(), "plain.yaml")))  # no workers: no Ray needed
    assert code == 0, err


def test_unused_scale_fields_leave_records_and_job_ids_as_they_were():
    """The shipped suites' job ids, computed before these fields existed (smoke's at the commit where
    the shapes world gained its training options, whose defaults enter every shapes job's record)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "suites"
    before = {"smoke": ["935671571944", "8c224fbdffb0", "678fbaf5f32f"],
              "coco-finetune": ["8cf7b3d8df5f", "fa204b7e98c4", "191ce89fa4aa", "7a55224bd5e5"]}
    for name, ids in before.items():
        jobs = expand(load_suite(root / f"{name}.yaml"), check_build=False)
        assert [j.id for j in jobs][: len(ids)] == ids
        assert "micro_batch" not in jobs[0].train
        assert set(jobs[0].resources) == {"gpus_per_job", "cpus_per_job"}
    jobs = expand(parse_suite({**_suite_dict(), "train": {"steps": 3, "batch_size": 16, "micro_batch": 4},
                               "resources": {"workers_per_job": 2, "cpus_per_job": 2}}), check_build=False)
    assert jobs[0].train["micro_batch"] == 4 and jobs[0].resources["workers_per_job"] == 2


def _suite_dict():
    import yaml

    return yaml.safe_load(suite_text())


def test_worker_shares_of_a_jobs_resources():
    r = Resources(cpus_per_job=8, gpus_per_job=4, workers_per_job=4).model_dump()
    assert worker_cpus(r) == 2 and worker_gpus(r) == 1
    r = Resources(cpus_per_job=2, workers_per_job=4, gpus_per_worker=0.5).model_dump()
    assert worker_cpus(r) == 0.5 and worker_gpus(r) == 0.5


def test_backend_scaling_and_placement_checks():
    """nccl for workers with GPUs, gloo without; what ScalingConfig gets; whether W workers fit."""
    from harness.executors import ray_cluster, ray_train

    assert ray_train.backend_for(0) == "gloo" and ray_train.backend_for(1) == "nccl" and ray_train.backend_for(0.5) == "nccl"
    gpu = Resources(cpus_per_job=8, workers_per_job=4, gpus_per_worker=1).model_dump()
    assert ray_train.scaling(gpu) == {"num_workers": 4, "use_gpu": True, "resources_per_worker": {"CPU": 2.0, "GPU": 1.0}}
    cpu = Resources(cpus_per_job=2, workers_per_job=2).model_dump()
    assert ray_train.scaling(cpu) == {"num_workers": 2, "use_gpu": False, "resources_per_worker": {"CPU": 1.0}}
    two_nodes = [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 8.0, "GPU": 2.0}]
    ray_cluster.check_resources(gpu, two_nodes)  # 2 + 2 workers of 1 GPU: spread over both nodes
    with pytest.raises(HarnessError, match=r"^resources\.workers_per_job: a job's 5 workers of 1\.6 CPU\(s\) and 1 GPU\(s\) "
                                           r"each do not fit on the Ray cluster \(room for 4\);"):
        ray_cluster.check_resources(Resources(cpus_per_job=8, workers_per_job=5, gpus_per_worker=1).model_dump(), two_nodes)
    ray_cluster.check_resources(cpu, [{"CPU": 2.0}])
    with pytest.raises(HarnessError, match="room for 1"):
        ray_cluster.check_resources(Resources(cpus_per_job=4, workers_per_job=2).model_dump(), [{"CPU": 3.0}])


def test_a_worker_on_a_gpu_gets_the_device_ray_gave_it(monkeypatch):
    """``run_job(device=...)`` wins over ``train.device``, so rank r trains on cuda:r (checked with a
    stand-in device: the job fails on this CPU-only machine only where it touches the device)."""
    import harness.runner as runner

    seen = {}

    def fake_train(encoder, loss, pairs, cfg, seed, device, *a, **k):
        seen["device"] = device
        raise RuntimeError("stop here")

    monkeypatch.setattr(runner, "train", fake_train)
    monkeypatch.setattr(runner, "env_info", lambda device: {"device": str(device)})
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.setdefault("threads", n))
    monkeypatch.setattr(runner, "create_plugin", lambda kind, spec: type("P", (), {"train_pairs": lambda self: []})())
    from harness.job import Job, PluginSpec

    job = Job(suite="s", objective=PluginSpec("clip"), encoder=PluginSpec("e"), dataset=PluginSpec("d"),
              train={"steps": 1, "device": "auto"}, seed=0, evaluations=[], resources={"workers_per_job": 2, "cpus_per_job": 2})
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = runner.run_job(job, tmp, device=torch.device("cuda", 1))
    assert seen["device"] == torch.device("cuda", 1)
    assert seen["threads"] == 1  # cpus_per_job 2 over 2 workers
    assert result["error"] == "RuntimeError: stop here"


def test_peak_memory_goes_to_env_not_metrics(shapes_pairs):
    _, stats, _ = run(lambda: get_registry().create("loss", "clip"), shapes_pairs, 4, steps=1)
    env = stats["env"]
    assert env["workers_per_job"] == 1 and env["peak_rss_mb"] > 0
    if importlib.util.find_spec("resource") and env["peak_rss_scope"] == "train":
        assert 0 <= env["peak_rss_above_start_mb"] <= env["peak_rss_mb"]
    from harness.runner import TRAIN_METRICS

    numeric = {k for k, v in stats.items() if isinstance(v, (int, float))}
    assert not any("rss" in k or "memory" in k for k in numeric | set(TRAIN_METRICS))
