"""The plugin as the harness sees it: registration, params, the loss contract, the public API only."""

import ast
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import harness
import harness.api
import harness_objectives
from harness.testing import parametrize_with_checks
from objectives_helpers import NAMES, V3_NAMES, inputs_for, total

SRC = Path(harness_objectives.__file__).parent

#: one out-of-range value per loss (each outside its Field limits)
OUT_OF_RANGE = {
    "cloob": {"inv_tau": 0.5},
    "dhel": {"temperature": 0.0},
    "hn_nce": {"beta": -1.0},
    "ifm": {"epsilon": -0.1},
    "vicreg": {"sim_weight": -1.0},
    "barlow_twins": {"off_diagonal_weight": -0.5},
    "clip_cosine_temperature": {"period_steps": 0},
    "negclip": {"temperature": 0.001},
    "sogclr": {"gamma": 0.0},
    "unicl": {"temperature": 2.0},
    "albef_itc": {"momentum": 1.0},
}

DEFAULTS = {
    "cloob": {"inv_tau": 30.0, "hopfield_scale": 8.0},
    "dhel": {"temperature": 0.3},
    "hn_nce": {"temperature": 0.07, "alpha": 1.0, "beta": 0.5},
    "ifm": {"temperature": 0.07, "epsilon": 0.1, "alpha": 1.0},
    "vicreg": {"sim_weight": 25.0, "var_weight": 25.0, "cov_weight": 1.0},
    "barlow_twins": {"off_diagonal_weight": 0.0051},
    "clip_cosine_temperature": {"temperature_min": 0.1, "temperature_max": 1.0, "period_steps": 400},
    "negclip": {"temperature": 0.07, "learnable_temperature": True},
    "sogclr": {"temperature": 0.01, "gamma": 0.8},
    "unicl": {"temperature": math.exp(-1.0), "learnable_temperature": True},
    "albef_itc": {"temperature": 0.07, "learnable_temperature": True, "momentum": 0.995, "alpha": 0.4,
                  "queue_size": 1024, "embed_dim": 0, "alpha_warmup_steps": 0},
}

EXTRAS = {
    "vicreg": ["image_raw", "text_raw"],
    "barlow_twins": ["image_raw", "text_raw"],
    "clip_cosine_temperature": ["step", "total_steps"],
    "negclip": ["text_negatives"],
    "sogclr": ["index"],
    "unicl": ["caption_group"],
    "albef_itc": ["image_momentum", "text_momentum"],
}

def test_all_eleven_listed_by_the_harness_with_their_distribution():
    listed = {p["name"]: p for p in harness.list_plugins() if p["kind"] == "loss"}
    for name in NAMES + V3_NAMES:
        assert name in listed, name
        info = listed[name]
        assert info["distribution"] == "harness-objectives"
        assert info["params"] == DEFAULTS[name]
        assert info.get("extras", []) == EXTRAS.get(name, [])
        described = info["param_info"]
        assert all(described[p]["description"] for p in DEFAULTS[name]), name  # every parameter described


def test_harness_plugins_json_cli_lists_them():
    exe = Path(sys.executable).with_name("harness")
    if not exe.exists():
        pytest.skip("no harness console script next to this interpreter")
    out = subprocess.run([str(exe), "plugins", "--json"], capture_output=True, text=True, timeout=300, check=True)
    import json

    ours = {p["name"] for p in json.loads(out.stdout) if p["distribution"] == "harness-objectives"}
    assert ours == set(NAMES + V3_NAMES)


@pytest.mark.parametrize("name", NAMES + V3_NAMES)
def test_create_with_defaults_and_reject_out_of_range(name):
    loss = harness.create_loss(name)
    assert isinstance(loss, torch.nn.Module)
    bad = OUT_OF_RANGE[name]
    (param,) = bad
    with pytest.raises(Exception, match=param):
        harness.create_loss(name, **bad)
    with pytest.raises(ValueError, match=param):  # built directly, the factory checks the same limits
        harness_objectives.LOSSES[name](**bad)


def test_cross_parameter_checks():
    with pytest.raises(Exception, match="temperature_min"):
        harness.create_loss("clip_cosine_temperature", temperature_min=0.5, temperature_max=0.1)
    with pytest.raises(ValueError, match="learnable_temperature"):
        harness_objectives.LOSSES["negclip"](learnable_temperature="maybe")
    with pytest.raises(ValueError, match="temperature"):
        harness_objectives.LOSSES["dhel"](temperature=True)


@parametrize_with_checks([("loss", name) for name in NAMES + V3_NAMES] + [("loss", f) for f in harness_objectives.LOSSES.values()])
def test_loss_contract(plugin, check):
    """Each rule of the harness's loss contract, on each loss: by name (registered) and by factory."""
    check(plugin)


@pytest.mark.parametrize("name", NAMES + V3_NAMES)
def test_check_loss(name):
    """``check_loss`` (every rule at once) passes, registered and built from the factory directly."""
    from harness.testing import check_loss

    check_loss(name)
    check_loss(harness_objectives.LOSSES[name])


@pytest.mark.parametrize("name", NAMES)
def test_batch_of_one_is_a_value_error(name):
    x, y, extras = inputs_for(name, 1, 8)
    with pytest.raises(ValueError):
        harness.create_loss(name)(x, y, **extras)


@pytest.mark.parametrize("name", NAMES)
def test_half_precision_inputs_are_cast_up(name):
    x, y, extras = inputs_for(name, 6, 8, dtype=torch.float16)
    terms = harness.create_loss(name)(x, y, **extras)
    for key, value in terms.items():
        assert value.dtype == torch.float32, key
        assert torch.isfinite(value), key
    x32, y32, extras32 = inputs_for(name, 6, 8, dtype=torch.float32)
    as32 = {k: (v.float() if torch.is_tensor(v) else v) for k, v in extras.items()}
    want = total(harness.create_loss(name)(x.float(), y.float(), **as32))
    assert math.isclose(float(total(terms).detach()), float(want.detach()), rel_tol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_terms_are_named_scalars(name):
    x, y, extras = inputs_for(name, 5, 8)
    terms = harness.create_loss(name)(x, y, **extras)
    assert terms and all(isinstance(k, str) and v.ndim == 0 for k, v in terms.items())


def test_temperatures_are_reported_as_logit_scale():
    """The trainer reports 1/exp(logit_scale) as train.temperature (cloob: 1/inv_tau)."""
    expected = {"cloob": 1 / 30, "dhel": 0.3, "hn_nce": 0.07, "ifm": 0.07, "negclip": 0.07,
                "clip_cosine_temperature": 1.0}
    for name, temperature in expected.items():
        loss = harness.create_loss(name)
        assert math.isclose(float(torch.exp(-loss.logit_scale.detach())), temperature, rel_tol=1e-6), name
        assert isinstance(loss.logit_scale, torch.nn.Parameter) == (name == "negclip"), name
    fixed = harness.create_loss("negclip", learnable_temperature=False)
    assert "logit_scale" in dict(fixed.named_buffers()) and not list(fixed.parameters())
    for name in ("vicreg", "barlow_twins"):
        assert not hasattr(harness.create_loss(name), "logit_scale")


def test_negclip_uses_text_negatives():
    x, y, extras = inputs_for("negclip", 6, 8, k=4)
    loss = harness.create_loss("negclip", learnable_temperature=False)
    with_negatives = total(loss(x, y, **extras))
    without = total(loss(x, y, text_negatives=extras["text_negatives"][:, :0]))
    assert with_negatives > without  # more captions to rank against: a higher cross-entropy
    # K = 0 is CLIP: (CE(sXY^T) + CE(sYX^T)) / 2
    logits = (x @ y.T) / 0.07
    labels = torch.arange(6)
    clip = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
    assert math.isclose(float(without), float(clip), rel_tol=1e-6)
    # the columns are [Y | every image's K negatives]: image i also ranks image j's negatives
    ce = torch.nn.functional.cross_entropy
    negatives = extras["text_negatives"]
    every = (x @ torch.cat([y, negatives.reshape(-1, 8)]).T) / 0.07
    assert math.isclose(float(with_negatives), float((ce(every, labels) + ce(logits.T, labels)) / 2), rel_tol=1e-6)  # float32 logit_scale
    own = torch.cat([logits, torch.einsum("nd,nkd->nk", x, negatives) / 0.07], dim=1)  # own negatives only
    assert not math.isclose(float(with_negatives), float((ce(own, labels) + ce(logits.T, labels)) / 2), rel_tol=1e-6)
    with pytest.raises(ValueError, match="text_negatives"):
        loss(x, y, text_negatives=extras["text_negatives"][:3])


def test_vicreg_and_barlow_use_the_raw_features_only():
    for name in ("vicreg", "barlow_twins"):
        x, y, extras = inputs_for(name, 6, 8)
        loss = harness.create_loss(name)
        a = total(loss(x, y, **extras))
        b = total(loss(y, x, **extras))  # other normalised features: no effect
        assert float(a) == float(b)
        scaled = {"image_raw": extras["image_raw"] * 2.0, "text_raw": extras["text_raw"]}
        assert float(total(loss(x, y, **scaled))) != float(a)  # the raw scale matters (not normalised away)
        with pytest.raises(ValueError, match="image_raw"):
            loss(x, y, image_raw=extras["image_raw"][:, :3], text_raw=extras["text_raw"])


# ------------------------------------------------------------------------------------- public API


def _harness_imports(path: Path) -> list[str]:
    """Every module name under ``harness`` that ``path`` imports (import x / from x import y)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "harness"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "harness":
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module != "harness"]
            if node.module == "harness":
                found += [f"harness.{a.name}" for a in node.names]
    return found


def test_distribution_uses_only_the_public_api():
    """No harness.builtin (or any other private module): only ``harness.api`` and its public names."""
    import harness.api

    public = {"harness.api", *(f"harness.api.{name}" for name in harness.api.__all__)}
    files = sorted(SRC.rglob("*.py"))
    assert len(files) >= 9
    for path in files:
        for name in _harness_imports(path):
            assert "builtin" not in name, f"{path.name} imports {name}"
            assert name in public, f"{path.name} imports {name}: not the harness's public plugin API"
    tests = sorted(Path(__file__).parent.glob("*.py"))
    for path in tests:  # the tests may use harness.testing as well, never the built-ins
        for name in _harness_imports(path):
            assert "builtin" not in name, f"{path.name} imports {name}"


def test_importing_the_distribution_loads_no_builtin_module():
    code = (
        "import sys, harness_objectives\n"
        "bad = sorted(m for m in sys.modules if m.startswith('harness.builtin'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
