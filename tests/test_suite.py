"""Suite files: parsing, defaults, grid expansion, labels, and stable job ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from conftest import GOOD_SUITE
from harness import hookimpl
from harness.errors import HarnessError
from harness.job import Job, PluginSpec
from harness.registry import Registry
from harness.suite import DEFAULT_EVALUATIONS, Suite, TrainConfig, _check_factory, default_label, expand, load_suite, parse_suite

SUITES = Path(__file__).resolve().parents[1] / "suites"


def _jobs(text: str, write_suite) -> list[Job]:
    path = write_suite(text)
    return expand(load_suite(path), source=str(path))


def _ids(text: str, write_suite) -> list[str]:
    return [j.id for j in _jobs(text, write_suite)]


def _variant(**changes: str) -> str:
    """GOOD_SUITE with some top-level lines replaced (key -> new YAML for that key)."""
    lines = GOOD_SUITE.splitlines()
    out, skip = [], False
    for line in lines:
        key = line.split(":", 1)[0]
        if not line.startswith(" ") and key in changes:
            out.append(f"{key}: {changes.pop(key)}")
            skip = True
            continue
        if skip and line.startswith(" "):
            continue
        skip = False
        out.append(line)
    out += [f"{k}: {v}" for k, v in changes.items()]
    return "\n".join(out) + "\n"


# --- good suites ---------------------------------------------------------------------------------


def test_good_suite_expands_to_the_grid(fake_registry, write_suite):
    jobs = _jobs(GOOD_SUITE, write_suite)
    assert len(jobs) == 2 * 1 * 1 * 2  # objectives x encoders x datasets x seeds
    assert [(j.objective.name, j.seed) for j in jobs] == [("fake_clip", 0), ("fake_clip", 1), ("fake_cua", 0), ("fake_cua", 1)]
    job = jobs[2]
    assert job.suite == "mini"
    # string and dict forms, a single encoder as a string and a single dataset as a mapping
    assert job.objective == PluginSpec("fake_cua", {"uniformity_weight": 2.0, "alignment_weight": 1.0,
                                                    "temperature": 0.07, "reduction": "sum"},
                                       label="fake_cua(uniformity_weight=2.0)")
    assert job.encoder == PluginSpec("fake_tower", {"dim": 8, "arch": "tiny", "pretrained": False}, label="fake_tower")
    assert job.dataset == PluginSpec("fake_shapes", {"n": 8, "tags": (), "noise": 0.0}, label="fake_shapes(n=8)")
    assert job.evaluations == [PluginSpec("fake_gap", {"k": 1}, label="fake_gap")]
    assert isinstance(job.objective.params["uniformity_weight"], float)  # coerced to the annotation
    # defaults filled in
    assert job.train == TrainConfig(steps=3, batch_size=4).model_dump()
    assert job.train["lr"] == 5e-4 and job.train["betas"] == (0.9, 0.98) and job.train["epochs"] is None
    assert job.save == [] and job.resources == {"gpus_per_job": 0.0, "cpus_per_job": 1}


def test_model_defaults_without_a_registry():
    suite = parse_suite(yaml.safe_load("name: s\nobjectives: a\nencoders: b\ndatasets: c\ntrain: {epochs: 2}\n"))
    assert [o.name for o in suite.objectives] == ["a"] and suite.objectives[0].params == {}
    assert suite.seeds == [0]
    assert [e.name for e in suite.evaluations] == DEFAULT_EVALUATIONS
    assert suite.save == [] and suite.resources.gpus_per_job == 0 and suite.resources.cpus_per_job == 1
    assert suite.train.steps is None and suite.train.epochs == 2.0 and suite.train.batch_size == 128
    assert suite.train.device == "auto" and suite.train.precision is None


def test_single_seed_and_yaml_1e_notation_are_accepted():
    suite = parse_suite(yaml.safe_load("name: s\nobjectives: a\nencoders: b\ndatasets: c\nseeds: 7\n"
                                       "train: {steps: 1, lr: 1e-4}\n"))  # PyYAML reads 1e-4 as a string
    assert suite.seeds == [7] and suite.train.lr == 1e-4


def test_objective_train_override_replaces_the_budget(fake_registry, write_suite):
    text = _variant(objectives="[{name: fake_clip, label: untrained, train: {steps: 0}}, fake_cua]",
                    train="{epochs: 2, batch_size: 4}")
    untrained, trained = _jobs(text, write_suite)[::2]
    assert untrained.objective.label == "untrained"
    assert (untrained.train["steps"], untrained.train["epochs"]) == (0, None)
    assert (trained.train["steps"], trained.train["epochs"]) == (None, 2.0)
    assert untrained.train["batch_size"] == trained.train["batch_size"] == 4  # the rest is inherited


def test_labels_default_to_name_plus_non_default_params(fake_registry, write_suite):
    text = _variant(objectives="[{name: fake_clip, params: {temperature: 0.07}}, "
                               "{name: fake_cua, params: {temperature: 0.01, uniformity_weight: 1}}, "
                               "{name: fake_cua, label: mine, params: {alignment_weight: 3}}]")
    labels = [j.objective.label for j in _jobs(text, write_suite)[::2]]
    assert labels == ["fake_clip", "fake_cua(temperature=0.01)", "mine"]
    assert default_label("x", {"b": 2, "a": 1}, {"a": 1, "b": 1}) == "x(b=2)"
    assert default_label("x", {"b": 2, "a": 0}, {}) == "x(a=0,b=2)"  # sorted, unknown defaults count as changed


# --- job ids -------------------------------------------------------------------------------------


def test_job_id_is_a_stable_hash_of_the_record():
    """Pinned value: changing how ids are computed orphans every finished run, so it must be deliberate."""
    job = Job(suite="s", objective=PluginSpec("a", {"t": 0.5}), encoder=PluginSpec("e"), dataset=PluginSpec("d"),
              train={"steps": 1}, seed=3, evaluations=[PluginSpec("g", {"k": 1})])
    identity = {"objective": {"name": "a", "params": {"t": 0.5}}, "encoder": {"name": "e", "params": {}},
                "dataset": {"name": "d", "params": {}}, "train": {"steps": 1}, "seed": 3,
                "evaluations": [{"name": "g", "params": {"k": 1}}]}
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    assert job.id == hashlib.sha256(blob.encode()).hexdigest()[:12] == "eb6f234511aa"
    copy = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    assert copy.id == job.id and copy == job
    assert len({job, copy}) == 1 and len({job.objective, copy.objective, PluginSpec("a", {"t": 0.25})}) == 2


def test_ids_are_stable_and_ignore_labels_name_save_resources(fake_registry, write_suite):
    base = _ids(GOOD_SUITE, write_suite)
    assert len(set(base)) == len(base) == 4
    assert _ids(GOOD_SUITE, write_suite) == base
    same = _variant(name="other-name", objectives="[{name: fake_clip, label: c}, {name: fake_cua, label: u, "
                    "params: {uniformity_weight: 2.0, temperature: 0.07}}]",
                    save="[checkpoint]", resources="{gpus_per_job: 1}")
    assert _ids(same, write_suite) == base  # 2 vs 2.0 and an explicit default resolve identically
    spelled = _variant(objectives="[fake_clip, {name: fake_cua, params: {uniformity_weight: 2e0}}]")
    assert _ids(spelled, write_suite) == base  # PyYAML's "2e0" string, coerced to 2.0
    for job in _jobs(GOOD_SUITE, write_suite):
        assert Job.from_dict(json.loads(json.dumps(job.to_dict()))).id == job.id


@pytest.mark.parametrize(
    "change",
    [
        {"objectives": "[fake_clip, {name: fake_cua, params: {uniformity_weight: 3}}]"},  # a loss param
        {"encoders": "{name: fake_tower, params: {dim: 16}}"},  # an encoder param
        {"datasets": "{name: fake_shapes, params: {n: 9}}"},  # a dataset param
        {"train": "{steps: 3, batch_size: 8}"},  # the train config
        {"evaluations": "[fake_gap, fake_probe]"},  # the evaluations
        {"evaluations": "[{name: fake_gap, params: {k: 2}}]"},  # an evaluation param
    ],
)
def test_ids_change_when_anything_that_determines_the_numbers_changes(fake_registry, write_suite, change):
    base = _ids(GOOD_SUITE, write_suite)
    changed = _ids(_variant(**change), write_suite)
    if "objectives" in change:
        assert changed[:2] == base[:2] and not set(changed[2:]) & set(base)  # only the fake_cua rows moved
    else:
        assert not set(changed) & set(base)


def test_ids_change_with_the_seed(fake_registry, write_suite):
    base = _ids(GOOD_SUITE, write_suite)
    ids = _ids(_variant(seeds="[1, 2]"), write_suite)
    assert ids[0] == base[1] and ids[2] == base[3]  # seed 1 is the same job as before
    assert ids[1] not in base and ids[3] not in base  # seed 2 is new


# --- errors without the CLI ----------------------------------------------------------------------


def test_parse_suite_errors_name_the_source_and_the_field():
    data = yaml.safe_load("name: s\nobjectives: a\nencoders: b\ndatasets: c\ntrain: {steps: 1, warmup: -2}\n")
    with pytest.raises(HarnessError) as info:
        parse_suite(data, source="x.yaml")
    assert str(info.value) == "x.yaml: train.warmup: Input should be greater than or equal to 0 (got -2)"


def test_expand_errors_name_the_source(fake_registry):
    suite = parse_suite(yaml.safe_load("name: s\nobjectives: fake_clip\nencoders: fake_towr\ndatasets: fake_shapes\n"
                                       "evaluations: [fake_gap]\ntrain: {steps: 1}\n"))
    with pytest.raises(HarnessError, match=r"^mem: encoders\[0\]\.name: unknown encoder 'fake_towr' "
                                           r"\(did you mean 'fake_tower'\?\)"):
        expand(suite, source="mem")


def test_long_values_are_shortened_in_messages():
    data = yaml.safe_load("name: s\nobjectives: a\nencoders: b\ndatasets: c\ntrain: {steps: 1, device: " + "x" * 500 + "}\n")
    with pytest.raises(HarnessError) as info:
        parse_suite(data, source="x.yaml")
    assert len(str(info.value)) < 200 and str(info.value).endswith("xxx...)")


# --- check_params: encoders and datasets are checked at validate time without being built ----------


class _CheckedPlugins:
    """Plugins whose encoder and dataset must never be built by ``expand``; one has ``check_params``."""

    built: list[str] = []

    class Tower:
        def __init__(self, width: int = 8):
            _CheckedPlugins.built.append("tower")

        @staticmethod
        def check_params(width: int = 8) -> None:
            if width < 1:
                raise ValueError(f"width must be >= 1, got {width}")

    class Data:  # no check_params: only the annotations are checked before it is built
        def __init__(self, size: int = 4):
            _CheckedPlugins.built.append("data")

    @staticmethod
    @hookimpl
    def harness_register_encoders(register):
        register("checked_tower", _CheckedPlugins.Tower)

    @staticmethod
    @hookimpl
    def harness_register_datasets(register):
        register("unchecked_data", _CheckedPlugins.Data)


def _checked_suite(width: int, size: int) -> Suite:
    return parse_suite({
        "name": "checked", "objectives": ["clip"], "evaluations": ["gap"], "train": {"steps": 1, "batch_size": 2},
        "encoders": [{"name": "checked_tower", "params": {"width": width}}],
        "datasets": [{"name": "unchecked_data", "params": {"size": size}}],
    })


def test_validate_calls_check_params_of_encoders_and_datasets_without_building_them():
    registry = Registry(load_entrypoints=False, extra_plugins=[(_CheckedPlugins, "checked-dist")])
    _CheckedPlugins.built.clear()
    jobs = expand(_checked_suite(width=4, size=-3), registry=registry)
    assert len(jobs) == 1 and _CheckedPlugins.built == []  # a value only the factory could reject passes
    with pytest.raises(HarnessError) as info:
        expand(_checked_suite(width=0, size=4), source="s.yaml", registry=registry)
    assert str(info.value) == (
        "s.yaml: encoders[0].params.width: encoder 'checked_tower' rejected its params: width must be >= 1, got 0"
    )
    assert _CheckedPlugins.built == []


@pytest.mark.parametrize("kind, name, params, where", [
    ("encoder", "open_clip", {"model": "harness-tiny-vt"}, "model"),  # check_params: a config that does not exist
    ("encoder", "open_clip", {"embed_dim": -4}, "embed_dim"),  # the rest: limits in the factory's signature
    ("encoder", "same_modality", {"model": "no-such-config"}, "model"),
    ("dataset", "shapes", {"num_shapes": 1}, "num_shapes"),
    ("dataset", "shapes", {"heldout_combos": 0.9}, "heldout_combos"),
    ("dataset", "digits", {"image_size": 4}, "image_size"),
    ("dataset", "image_text_files", {"path": "pairs.csv", "separator": "::"}, "separator"),
    ("dataset", "clip_benchmark", {"dataset": "wds/cifar10", "root": "x", "task": "captions"}, "task"),
])
def test_builtin_params_are_refused_at_validate_time_without_building(kind, name, params, where):
    """Validate's two checks (the signature's limits, then check_params) refuse what building would."""
    registry = Registry(load_entrypoints=False)
    entry = registry.get(kind, name)
    spec = PluginSpec(name, params)
    with pytest.raises(HarnessError, match=rf"\bparams\.{where}\b"):
        resolved = entry.resolve(params, where="params")
        spec = PluginSpec(name, resolved)
        _check_factory(kind, spec, "", registry, build=False)


def test_builtin_check_params_accept_the_shipped_suites_without_data_or_weights():
    # coco-finetune names a CSV and pretrained weights that are not on this machine: validate passes.
    registry = Registry(load_entrypoints=False)
    for path in sorted(SUITES.glob("*.yaml")):
        suite = load_suite(path)
        if suite.requires:  # needs third-party plugins: test_e2e validates it with them installed
            continue
        assert expand(suite, source=str(path), registry=registry)


# --- replicates: independent world draws ------------------------------------------------------------


def test_replicate_r_draws_world_r_and_trains_with_seed_r(fake_registry, write_suite):
    text = _variant(seeds=None, datasets="{name: shapes, params: {train_size: 64, eval_size: 32}}").replace(
        "seeds: None\n", "replicates: 3\n")
    jobs = _jobs(text, write_suite)
    assert len(jobs) == 2 * 3
    for objective in ("fake_clip", "fake_cua"):
        mine = [j for j in jobs if j.objective.name == objective]
        assert [(j.replicate, j.seed, j.dataset.params["seed"]) for j in mine] == [(0, 0, 0), (1, 1, 1), (2, 2, 2)]
        assert {j.dataset.display for j in mine} == {"shapes(eval_size=32,train_size=64)"}  # one table
    # the same N worlds for every objective
    assert [j.dataset for j in jobs[:3]] == [j.dataset for j in jobs[3:]]
    assert len({j.id for j in jobs}) == 6
    # replicate 0 is the seed-0 job of a suite of seeds (world 0 is the dataset's default draw)
    plain = _jobs(_variant(seeds="[0]", datasets="{name: shapes, params: {train_size: 64, eval_size: 32}}"), write_suite)
    assert plain[0].id == jobs[0].id and plain[0].replicate is None


def test_replicates_of_a_dataset_without_a_seed_change_the_training_seed_only(fake_registry, write_suite):
    jobs = _jobs(_variant(seeds=None).replace("seeds: None\n", "replicates: 2\n"), write_suite)
    assert [(j.replicate, j.seed) for j in jobs if j.objective.name == "fake_clip"] == [(0, 0), (1, 1)]
    assert all("seed" not in j.dataset.params for j in jobs)


@pytest.mark.parametrize("lines, error", [
    ("seeds: [0, 1]\nreplicates: 2\n", "give seeds or replicates, not both"),
    ("replicates: 0\n", "replicates: Input should be greater than or equal to 1"),
    ("replicates: 1001\n", "replicates: Input should be less than or equal to 1000"),
    ("replicates: '3'\n", "replicates: Input should be a valid integer"),
    ("replicates: true\n", "replicates: Input should be a valid integer"),
])
def test_bad_replicates_are_one_line_errors(fake_registry, write_suite, lines, error):
    text = _variant(seeds=None).replace("seeds: None\n", lines)
    with pytest.raises(HarnessError, match=error):
        _jobs(text, write_suite)


def test_an_encoder_can_run_fewer_replicates_than_the_suite_with_the_same_ids(fake_registry, write_suite):
    full = _jobs(_variant(seeds=None, encoders="[fake_tower, {name: fake_tower, label: second, params: {dim: 16}}]")
                 .replace("seeds: None\n", "replicates: 3\n"), write_suite)
    capped = _jobs(_variant(seeds=None, encoders="[fake_tower, {name: fake_tower, label: second, params: {dim: 16}, "
                            "replicates: 2}]").replace("seeds: None\n", "replicates: 3\n"), write_suite)
    second = [j for j in capped if j.encoder.display == "second"]
    assert sorted({j.replicate for j in second}) == [0, 1]  # replicate 2 left out for this encoder only
    assert sorted({j.replicate for j in capped if j.encoder.display != "second"}) == [0, 1, 2]
    assert {j.id for j in capped} == {j.id for j in full if not (j.encoder.display == "second" and j.replicate == 2)}


@pytest.mark.parametrize("suite_lines, cap, error", [
    ("replicates: 2\n", 3, r"encoders\[0\]\.replicates: at most the suite's replicates \(2\), got 3"),
    ("seeds: [0]\n", 1, r"encoders\[0\]\.replicates: at most the suite's replicates \(none"),
    ("replicates: 2\n", 0, r"encoders\[0\]\.replicates: Input should be greater than or equal to 1"),
])
def test_a_bad_encoder_replicates_is_a_one_line_error(fake_registry, write_suite, suite_lines, cap, error):
    text = _variant(seeds=None, encoders=f"[{{name: fake_tower, replicates: {cap}}}]").replace("seeds: None\n", suite_lines)
    with pytest.raises(HarnessError, match=error):
        _jobs(text, write_suite)


def test_run_replicates_keeps_the_first_n_replicates_and_refuses_a_suite_of_seeds(fake_registry, write_suite):
    from harness.cli import first_replicates
    from harness.suite import expand_grid, load_suite

    path = write_suite(_variant(seeds=None).replace("seeds: None\n", "replicates: 3\n"))
    suite = load_suite(path)
    grid = expand_grid(suite, source=str(path), registry=fake_registry)
    first = first_replicates(suite, grid, 2)
    assert [j.id for j in first.jobs] == [j.id for j in grid.jobs if j.replicate < 2] and len(first.jobs) == 4
    with pytest.raises(HarnessError, match="--replicates: at most the suite's 3 replicates, got 4"):
        first_replicates(suite, grid, 4)
    seeds_path = write_suite(GOOD_SUITE)
    seeds = load_suite(seeds_path)
    with pytest.raises(HarnessError, match="--replicates: suite 'mini' gives seeds, not replicates"):
        first_replicates(seeds, expand_grid(seeds, source=str(seeds_path), registry=fake_registry), 1)


def test_a_dataset_seed_given_with_replicates_is_refused_naming_the_field(fake_registry, write_suite):
    text = _variant(seeds=None, datasets="{name: shapes, params: {train_size: 64, eval_size: 32, seed: 5}}").replace(
        "seeds: None\n", "replicates: 2\n")
    with pytest.raises(HarnessError, match=r"datasets\[0\]\.params\.seed: replicates draw each world's seed"):
        _jobs(text, write_suite)


def test_reference_names_an_objective_of_the_suite(fake_registry, write_suite):
    jobs = _jobs(_variant(reference="fake_cua(uniformity_weight=2.0)"), write_suite)
    assert {j.reference for j in jobs} == {"fake_cua(uniformity_weight=2.0)"}
    assert {j.reference for j in _jobs(GOOD_SUITE, write_suite)} == {None}
    with pytest.raises(HarnessError, match=r"reference: 'clip' is not an objective of this suite; one of: fake_clip"):
        _jobs(_variant(reference="clip"), write_suite)


def test_a_param_added_later_leaves_earlier_ids_alone_at_its_default(fake_registry, write_suite):
    """shapes' ``headline`` came after its job ids were published (ID_OPTIONAL_PARAMS): at its
    default it is left out of the job's params, so the id is the one the suite had before; set to
    anything else it is a new job."""
    base = "{name: shapes, params: {train_size: 64, eval_size: 32%s}}"
    plain = _jobs(_variant(datasets=base % ""), write_suite)
    explicit = _jobs(_variant(datasets=base % ", headline: null"), write_suite)
    chosen = _jobs(_variant(datasets=base % ", headline: [shape, position]"), write_suite)
    assert [j.id for j in explicit] == [j.id for j in plain]
    assert "headline" not in plain[0].dataset.params and "num_colours" in plain[0].dataset.params
    assert chosen[0].dataset.params["headline"] == ["shape", "position"]
    assert not {j.id for j in chosen} & {j.id for j in plain}


def test_encoder_train_overrides_give_each_encoder_its_budget_and_objectives_apply_after(fake_registry, write_suite):
    """A batch-size axis: ``encoders[].train`` overrides the suite's train config for that encoder's
    jobs; an objective's own override (``steps: 0``) is applied after it; other encoders' ids stay."""
    plain = _jobs(_variant(objectives="[{name: fake_clip, label: untrained, train: {steps: 0}}, fake_cua]",
                           train="{epochs: 2, batch_size: 4}"), write_suite)
    text = _variant(objectives="[{name: fake_clip, label: untrained, train: {steps: 0}}, fake_cua]",
                    train="{epochs: 2, batch_size: 4}",
                    encoders="[fake_tower, {name: fake_tower, label: b8, params: {dim: 16}, train: {batch_size: 8}}, "
                             "{name: fake_tower, label: s5, params: {dim: 4}, train: {steps: 5}}]")
    jobs = {(j.objective.display, j.encoder.display, j.seed): j for j in _jobs(text, write_suite)}
    assert jobs[("fake_cua", "b8", 0)].train["batch_size"] == 8 and jobs[("fake_cua", "b8", 0)].train["epochs"] == 2.0
    assert jobs[("fake_cua", "fake_tower", 0)].train["batch_size"] == 4
    assert (jobs[("fake_cua", "s5", 0)].train["steps"], jobs[("fake_cua", "s5", 0)].train["epochs"]) == (5, None)
    untrained = jobs[("untrained", "b8", 0)].train
    assert (untrained["steps"], untrained["epochs"], untrained["batch_size"]) == (0, None, 8)
    assert {j.id for j in plain} <= {j.id for j in jobs.values()}  # the encoder without overrides: same ids


@pytest.mark.parametrize("encoders, error", [
    ("[{name: fake_tower, train: {batch_size: 0}}]",
     r"encoders\[0\]\.train\.batch_size: Input should be greater than or equal to 1"),
    ("[{name: fake_tower, train: {nope: 1}}]", r"encoders\[0\]\.train\.nope"),
    ("[{name: fake_tower, train: {steps: 2, epochs: 1}}]", r"encoders\[0\]\.train.*steps or epochs, not both"),
])
def test_a_bad_encoder_train_override_is_a_one_line_error(fake_registry, write_suite, encoders, error):
    with pytest.raises(HarnessError, match=error) as exc:
        _jobs(_variant(encoders=encoders), write_suite)
    assert "\n" not in str(exc.value)


def test_encoder_train_overrides_and_tuning_are_refused_together(fake_registry, write_suite):
    text = _variant(encoders="[{name: fake_tower, train: {batch_size: 8}}]") + "tune:\n  grid: {train.lr: [1.0e-3, 3.0e-3]}\n"
    with pytest.raises(HarnessError, match=r"encoders\[\]\.train overrides cannot be combined with tune"):
        _jobs(text, write_suite)
