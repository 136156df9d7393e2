"""Contract v3: the ``index`` and ``caption_group`` extras, ``setup(dataset_size)``, loss state, the
momentum (EMA) towers and their ``image_momentum`` / ``text_momentum`` extras, their refusals at
validate time and in ``harness.testing``, and randomness under ``train.micro_batch``.

The toy plugins (linear towers on 4x4 images, colour captions) are in ``contract_plugins``; the
2-worker run (Ray Train, slow) is at the end.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import contract_plugins as cp
import harness.training.loop as loop_mod
from harness.config import TrainConfig
from harness.registry import Registry, declared_extras, set_registry
from harness.testing import ChecksFailed, check_loss, check_loss_float32
from harness.testing.losses import DATASET_SIZE
from harness.training import train
from harness.training.momentum import ema_update
from harness.types import loss_momentum

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def train_toy(loss, micro=None, steps=3, batch=12, pairs=None, **cfg):
    """Train the linear towers from seed 0 on the colour pairs; returns (encoder, pairs, stats)."""
    torch.manual_seed(0)
    encoder = cp.LinearEncoder()
    pairs = pairs if pairs is not None else cp.ColourPairs()
    config = TrainConfig(steps=steps, batch_size=batch, lr=1e-2, warmup=1, micro_batch=micro, **cfg)
    stats = train(encoder, loss, pairs, config, 0, CPU)
    return encoder, pairs, stats


@pytest.fixture
def captured_ema(monkeypatch):
    """The momentum towers the trainer makes (``LoopState.ema``), captured as they are created."""
    made = []

    def capture(model, loss_fn):
        ema = real(model, loss_fn)
        made.append(ema)
        return ema

    real = loop_mod.new_ema
    monkeypatch.setattr(loop_mod, "new_ema", capture)
    return made


# ------------------------------------------------------------------------------ index and setup


@pytest.mark.parametrize("micro", [None, 5], ids=["plain", "micro5"])
def test_index_is_each_pairs_row_fetched(micro):
    loss = cp.IndexRecorder()
    _, pairs, _ = train_toy(loss, micro, steps=5)  # 48 pairs, batches of 12: an epoch and a new permutation
    fetched = np.concatenate(pairs.fetched)
    assert loss.seen.dtype == torch.int64 and loss.seen.tolist() == fetched.tolist()
    assert len(fetched) == 60 and loss.visits.sum() == 60 and int(loss.visits.max()) == 2


def test_setup_is_called_once_with_the_split_size_before_the_first_step():
    loss = cp.IndexRecorder()
    _, pairs, _ = train_toy(loss, steps=2)
    assert loss.setup_calls == [(len(pairs), 0)] and len(pairs) == 48  # once, with 48, before any forward
    assert loss.visits.shape == (48,)


class SetupParameter(nn.Module):
    """``setup`` creates a learnable parameter: trained only if the optimizer is made after ``setup``."""

    extras = ("index",)

    def setup(self, dataset_size):
        self.bias = nn.Parameter(torch.zeros(dataset_size))

    def forward(self, x, y, *, index):
        return {"contrastive": cp.clip_terms(x, y), "bias": (self.bias[index] - 1).pow(2).mean()}


def test_setup_comes_before_anything_else_touches_the_loss():
    loss = SetupParameter()
    train_toy(loss, steps=3)
    assert float(loss.bias.detach().abs().sum()) > 0  # its parameter was in the optimizer


def test_no_setup_no_extras_no_momentum_towers_for_a_plain_loss(captured_ema):
    loss = cp.RandomDraws()
    train_toy(loss, steps=1)
    assert captured_ema == [None]


# ------------------------------------------------------------------------------ caption_group


def _equal_pattern(values) -> np.ndarray:
    keys = list(values)
    return np.array([[a == b for b in keys] for a in keys])


@pytest.mark.parametrize("world", [{}, {"num_shapes": 2, "num_colours": 2, "two_object_prob": 0.1}])
def test_shapes_caption_group_equal_exactly_for_equal_canonical_captions(world):
    import harness

    pairs = harness.create_dataset("shapes", train_size=400, eval_size=16, captions="canonical", **world).train_pairs()
    idx = np.arange(400)
    _, captions = pairs.get_batch(idx, np.random.default_rng(0))
    groups = pairs.caption_groups(idx, captions)
    assert groups.dtype == np.int64 and groups.shape == (400,)
    same_caption = _equal_pattern(captions)
    assert (_equal_pattern(groups.tolist()) == same_caption).all()
    assert same_caption.sum() > 400  # some captions repeat, so equality is exercised both ways


def test_shapes_paraphrases_share_a_group_when_they_describe_the_same_attributes():
    """Paraphrase captions: the same group exactly when they describe the same objects (the canonical
    caption) and name the same background or none (40% name it)."""
    from harness.builtin.datasets.shapes.grammar import BACKGROUND_TEMPLATES, canonical_caption, captions, scene_objects

    import harness

    ds = harness.create_dataset("shapes", train_size=300, eval_size=16, num_shapes=2, num_colours=2)
    pairs = ds.train_pairs()
    rows = pairs.scenes
    drawn = captions(rows, np.random.default_rng(3), with_templates=True)
    texts = [t for t, _ in drawn]
    named = [next((t for t in used if t in BACKGROUND_TEMPLATES), None) is not None for _, used in drawn]
    meaning = [(canonical_caption(scene_objects(rows, i)), int(rows.background[i]) if named[i] else None)
               for i in range(len(rows))]
    groups = pairs.caption_groups(np.arange(len(rows)), texts)
    assert (_equal_pattern(groups.tolist()) == _equal_pattern(meaning)).all()
    assert len(set(texts)) > len(set(groups.tolist()))  # different wordings of one meaning share a group
    canonical = pairs.caption_groups(np.arange(len(rows)), [m for m, _ in meaning])
    assert ((groups == canonical) == ~np.array(named)).all()  # without a background: the canonical caption's group


def test_digits_caption_group_is_the_digit():
    import harness

    pairs = harness.create_dataset("digits").train_pairs()
    idx = np.arange(0, 200, 3)
    _, captions = pairs.get_batch(idx, np.random.default_rng(0))
    assert pairs.caption_groups(idx, captions).tolist() == pairs.labels[idx].tolist()


@pytest.mark.parametrize("micro", [None, 5], ids=["plain", "micro5"])
def test_the_loss_receives_the_batchs_caption_groups(micro):
    loss = cp.Memory()
    _, pairs, _ = train_toy(loss, micro)
    for got, idx, caps in zip(loss.received, pairs.fetched, pairs.captions):
        assert got["caption_group"].dtype == torch.int64
        assert got["caption_group"].tolist() == pairs.labels[idx].tolist() == pairs.caption_groups(idx, caps).tolist()
        assert got["index"].tolist() == idx.tolist()


# ------------------------------------------------------------------------------ momentum towers


def test_ema_update_formula_by_hand():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.Linear(2, 2))
    online[2].bias.requires_grad_(False)  # frozen: copied as it is
    ema = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.Linear(2, 2))
    with torch.no_grad():
        online[1].running_mean.fill_(0.25)
        online[1].num_batches_tracked.fill_(7)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    ema_update(ema, online, 0.75)
    for (name, e), p in zip(ema.named_parameters(), online.parameters()):
        want = p if name == "2.bias" else 0.75 * before[name] + 0.25 * p
        torch.testing.assert_close(e, want.detach(), rtol=0, atol=1e-7, msg=name)
    for name, e in ema.named_buffers():
        assert torch.equal(e, dict(online.named_buffers())[name]), name


def test_the_trainer_keeps_the_ema_at_the_momentum_of_every_step(captured_ema):
    """A schedule: momentum 0.6, 0.7, 0.8, 0.9 after steps 1..4; the EMA follows the recursion by hand."""
    loss = cp.Memory(schedule=True)
    torch.manual_seed(0)
    encoder = cp.LinearEncoder()
    start = [p.detach().clone() for p in encoder.model.parameters()]
    online = []
    config = TrainConfig(steps=4, batch_size=12, lr=1e-2, warmup=1)
    train(encoder, loss, cp.ColourPairs(), config, 0, CPU,
          progress=lambda s: online.append([p.detach().clone() for p in encoder.model.parameters()]))
    (ema,) = captured_ema
    want = start
    for step, params in enumerate(online):
        m = min(0.9, 0.5 + 0.1 * (step + 1))
        want = [m * e + (1 - m) * p for e, p in zip(want, params)]
    for got, expected, last in zip(ema.parameters(), want, online[-1]):
        assert not got.requires_grad
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
        assert not torch.equal(got, last)  # not the online towers
    assert math.isclose(loss.momentum, 0.9)


@pytest.mark.parametrize("micro", [None, 5], ids=["plain", "micro5"])
def test_momentum_features_are_the_ema_towers_encoding_of_the_batch(micro, captured_ema):
    snapshots = []

    class Snapshot(cp.Memory):
        def forward(self, x, y, **extras):
            snapshots.append({k: v.clone() for k, v in captured_ema[0].state_dict().items()})
            return super().forward(x, y, **extras)

    loss = Snapshot()
    encoder, pairs, _ = train_toy(loss, micro)
    assert len(snapshots) == len(loss.received) == 3
    for step, (state, got, idx, caps) in enumerate(zip(snapshots, loss.received, pairs.fetched, pairs.captions)):
        towers = cp.Towers(8)
        towers.load_state_dict(state)
        with torch.no_grad():
            x = encoder.preprocess_images(pairs.images[idx], True)
            image = F.normalize(towers.image(x), dim=-1)
            text = F.normalize(towers.text(encoder.tokenize(caps)), dim=-1)
        assert not got["image_momentum"].requires_grad and got["image_momentum"].dtype == torch.float32
        torch.testing.assert_close(got["image_momentum"], image, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["text_momentum"], text, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    initial = cp.LinearEncoder().model.state_dict()
    assert all(torch.equal(snapshots[0][k], v) for k, v in initial.items())  # the EMA starts as the online towers
    assert not torch.allclose(loss.received[-1]["image_momentum"], F.normalize(
        encoder.model.image(encoder.preprocess_images(pairs.images[pairs.fetched[-1]], True)), dim=-1).detach())


def test_loss_momentum_accepts_a_float_in_0_1_only():
    class With:
        def __init__(self, m):
            self.momentum = m

    assert loss_momentum(object()) is None
    assert loss_momentum(With(0.5)) == 0.5
    for bad in (0.0, 1.0, 1.5, -0.1, float("nan"), 1, True, "0.5", torch.tensor(0.5), None):
        with pytest.raises(ValueError, match="momentum must be a float in"):
            loss_momentum(With(bad))


def test_a_bad_momentum_stops_training_before_the_first_step():
    with pytest.raises(ValueError, match=r"momentum must be a float in \(0, 1\).*got 1\.5"):
        train_toy(cp.BadMomentum(), steps=1)
    with pytest.raises(ValueError, match="declares 'image_momentum' but has no momentum attribute"):
        train_toy(cp.NoMomentum(), steps=1)


# ------------------------------------------------------------------------------ GradCache


def test_micro_batch_gives_the_unchunked_run_for_a_stateful_loss(captured_ema):
    """Memory (index, caption_group, momentum features, state, setup): the same parameters, loss
    state, momentum towers and extras in chunks of 5 as whole batches of 12."""
    runs = []
    for micro in (None, 5):
        loss = cp.Memory()
        encoder, _, stats = train_toy(loss, micro, steps=4)
        runs.append((encoder, loss, stats, captured_ema[-1]))
    (e1, l1, s1, ema1), (e2, l2, s2, ema2) = runs
    assert s1["env"]["micro_batch"] is None and s2["env"]["micro_batch"] == 5
    for a, b in zip(list(e1.model.parameters()) + list(ema1.parameters()), list(e2.model.parameters()) + list(ema2.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l1.average, l2.average, rtol=1e-5, atol=1e-6)
    assert bool((l1.average != 0).any())
    for a, b in zip(l1.received, l2.received):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["caption_group"], b["caption_group"])
        torch.testing.assert_close(a["image_momentum"], b["image_momentum"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a["text_momentum"], b["text_momentum"], rtol=1e-5, atol=1e-6)


def test_a_loss_drawing_random_numbers_gets_the_same_draws_with_micro_batches():
    """GradCache replays each chunk's RNG state, then goes on from where the loss left it: the loss
    draws the sequence it draws without chunks (it used to see one value at every step)."""
    plain, chunked = cp.RandomDraws(), cp.RandomDraws()
    e1, _, _ = train_toy(plain, None, steps=4)
    e2, _, _ = train_toy(chunked, 5, steps=4)
    assert len(set(plain.draws)) == 4
    assert chunked.draws == plain.draws
    for a, b in zip(e1.model.parameters(), e2.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ validate and listing


@pytest.fixture
def v3_registry(use_registry):
    reg = Registry(load_entrypoints=False, extra_plugins=[(cp, cp.DIST)])
    use_registry(reg)
    return reg


SUITE = """\
name: v3
objectives: [{objective}]
encoders: v3_linear
datasets: {dataset}
train: {{steps: 2, batch_size: 8}}
evaluations: [v3_meancos]
"""


@pytest.mark.parametrize("objective, dataset, expected", [
    ("v3_grouped", "v3_plain", "objectives[0]: loss 'v3_grouped' needs the extra 'caption_group', which dataset "
                               "'v3_plain' (datasets[0]) cannot supply; datasets that can: digits, shapes, v3_colours"),
    ("v3_bad_momentum", "v3_colours", "objectives[0]: loss 'v3_bad_momentum': momentum must be a float in (0, 1)"),
    ("{name: v3_bad_momentum, params: {momentum: 1}}", "v3_colours", "momentum must be a float in (0, 1), the EMA "
                                                                      "rate of the momentum towers"),
    ("{name: v3_bad_momentum, params: {momentum: '0.5'}}", "v3_colours", "got '0.5'"),
    ("v3_no_momentum", "v3_colours", "objectives[0]: loss 'v3_no_momentum' declares 'image_momentum' but has no "
                                     "momentum attribute"),
])
def test_validate_refuses_what_the_trainer_cannot_serve(cli, v3_registry, write_suite, objective, dataset, expected):
    path = write_suite(SUITE.format(objective=objective, dataset=dataset))
    code, out, err = cli("validate", str(path))
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and "Traceback" not in err
    assert expected in err, err


def test_validate_accepts_the_v3_losses_where_they_can_be_served(cli, v3_registry, write_suite):
    for objective in ("v3_grouped", "v3_memory", "v3_index_recorder", "{name: v3_bad_momentum, params: {momentum: 0.5}}"):
        code, _, err = cli("validate", str(write_suite(SUITE.format(objective=objective, dataset="v3_colours"))))
        assert code == 0, err


def test_plugins_json_lists_every_extra_of_each_loss(cli, v3_registry):
    code, out, _ = cli("plugins", "--json")
    assert code == 0
    losses = {p["name"]: p for p in json.loads(out) if p["kind"] == "loss"}
    assert losses["v3_memory"]["extras"] == ["index", "caption_group", "image_momentum", "text_momentum", "step"]
    assert losses["v3_index_recorder"]["extras"] == ["index"]
    assert losses["v3_grouped"]["extras"] == ["caption_group"]
    for name, entry in v3_registry.plugins["loss"].items():
        assert losses[name]["extras"] == list(declared_extras(entry.factory)), name
    datasets = {p["name"]: p for p in json.loads(out) if p["kind"] == "dataset"}
    assert datasets["shapes"]["supplies"] == ["text_negatives", "caption_group"]
    assert datasets["digits"]["supplies"] == ["caption_group"] and datasets["v3_plain"]["supplies"] == []


# ------------------------------------------------------------------------------ harness.testing


class CountingLoss(nn.Module):
    """Its value depends on how often it was called, a count kept in a plain attribute: not saved."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, y):
        self.calls += 1
        x, y = cp.prepare_features(x, y, "counting")
        return {"contrastive": cp.clip_terms(x, y) * (1 + 0.1 * self.calls)}


class BufferCountingLoss(CountingLoss):
    """The same count in a buffer: state that round-trips."""

    def __init__(self):
        nn.Module.__init__(self)
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, x, y):
        self.count += 1
        x, y = cp.prepare_features(x, y, "buffer_counting")
        return {"contrastive": cp.clip_terms(x, y) * (1 + 0.1 * self.count)}


def test_check_loss_catches_state_that_does_not_round_trip():
    with pytest.raises(ChecksFailed) as info:
        check_loss(CountingLoss)
    assert [name for name, _ in info.value.failures] == ["check_loss_state_round_trip"]
    assert "its state does not round-trip: after load_state_dict into a fresh instance, term 'contrastive'" in str(info.value)


def test_a_stateful_loss_that_round_trips_passes_though_its_value_changes_across_calls():
    loss = BufferCountingLoss()
    x, y = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    assert float(loss(x, y)["contrastive"]) != float(loss(x, y)["contrastive"])  # the old rule would fail it
    check_loss(BufferCountingLoss)
    check_loss(cp.Memory)  # every v3 extra synthesised, setup called, momentum checked
    check_loss(cp.IndexRecorder)


def test_check_loss_feeds_two_batches_after_setup_and_every_declared_extra():
    seen = []

    class Probe(cp.Memory):
        def setup(self, dataset_size):
            seen.append(("setup", dataset_size))
            super().setup(dataset_size)

        def forward(self, x, y, **extras):
            seen.append(("forward", x.detach().clone(), {k: v for k, v in extras.items()}))
            return super().forward(x, y, **extras)

    check_loss_float32(Probe())
    assert seen[0] == ("setup", DATASET_SIZE)
    calls = seen[1:]
    assert len(calls) >= 2 and not torch.equal(calls[0][1], calls[1][1])  # two different batches
    extras = calls[0][2]
    assert set(extras) == {"index", "caption_group", "image_momentum", "text_momentum", "step"}
    assert extras["index"].dtype == torch.int64 and int(extras["index"].max()) < DATASET_SIZE
    assert extras["caption_group"].dtype == torch.int64 and len(set(extras["caption_group"].tolist())) < len(calls[0][1])
    torch.testing.assert_close(extras["image_momentum"].norm(dim=1), torch.ones(len(calls[0][1])))
    assert not extras["image_momentum"].requires_grad


def test_check_loss_refuses_a_bad_momentum():
    with pytest.raises(ChecksFailed) as info:
        check_loss(cp.NoMomentum)
    assert "check_loss_momentum" in dict(info.value.failures)
    assert "declares 'image_momentum' but has no momentum attribute" in str(info.value)


# ------------------------------------------------------------------------------ 2 workers (Ray Train)


def _worker_suite(resources: dict) -> dict:
    return {
        "name": "v3-workers",
        "objectives": [{"name": "v3_index_recorder"}, {"name": "v3_memory"}],
        "encoders": [{"name": "v3_linear"}],
        "datasets": [{"name": "v3_colours"}],
        "train": {"steps": 3, "batch_size": 16, "lr": 1e-3, "warmup": 1, "log_every": 1},
        "evaluations": ["v3_meancos"],
        "save": ["checkpoint"],
        "resources": resources,
    }


@pytest.mark.slow
def test_two_workers_leave_the_loss_state_of_one_process(tmp_path, monkeypatch):
    """Every rank updates the same global state from the gathered index and features (each
    forward checks that the ranks agree), and rank 0's saved state is one process's."""
    pytest.importorskip("ray.train.torch", reason="multi-worker jobs need ray[train]")
    from harness.executors import run_suite
    from harness.suite import expand, parse_suite

    site = cp.install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", cp.DIST)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    set_registry(Registry())
    dirs = []
    try:
        for resources in ({"cpus_per_job": 2}, {"cpus_per_job": 2, "workers_per_job": 2}):
            suite = parse_suite(_worker_suite(resources))
            jobs = expand(suite)
            out = tmp_path / str(len(dirs))
            run_suite(suite, jobs, out=out, executor="local")
            dirs.append({j.objective.display: out / suite.name / j.id for j in jobs})
    finally:
        set_registry(None)
    one, two = dirs
    for name in ("v3_index_recorder", "v3_memory"):
        r1, r2 = (json.loads((d[name] / "result.json").read_text()) for d in (one, two))
        assert r1["status"] == r2["status"] == "ok", (name, r2.get("error"))
        assert r2["env"]["workers_per_job"] == 2
        c1, c2 = (torch.load(d[name] / "checkpoint.pt", weights_only=True) for d in (one, two))
        assert set(c1["loss"]) == set(c2["loss"]) and c1["loss"]
        for key, value in c1["loss"].items():
            if value.is_floating_point():
                torch.testing.assert_close(c2["loss"][key], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
            else:
                assert torch.equal(c2["loss"][key], value), (name, key)
        for key, value in c1["model"].items():
            torch.testing.assert_close(c2["model"][key], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
    seen = torch.load(one["v3_index_recorder"] / "checkpoint.pt", weights_only=True)["loss"]["seen"]
    assert len(seen) == 48  # 3 steps of 16: every index of every gathered batch, in order
