"""The ``harness`` command line: help, ``plugins``, ``validate``, and one-line errors with exit code 2.

Most checks call ``harness.cli.main`` in-process; a few run the installed console script in a fresh
process (each costs a few seconds of torch import) to check what a user really sees.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import FIXTURES, GOOD_SUITE
from harness import hookimpl
from harness.registry import Registry

BAD_SUITES = sorted((FIXTURES / "bad_suites").glob("*.yaml"))


def _expected(path: Path) -> list[str]:
    """The ``# expect: ...`` lines at the top of a bad suite: substrings of its one-line error."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("expect:", 1)[1].strip() for line in lines if line.startswith("# expect:")]


def _assert_one_line_error(code: int, out: str, err: str, path: str, expected: list[str]) -> None:
    assert code == 2, err
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, f"not exactly one line on stderr: {err!r}"
    assert err.startswith(f"error: {path}: "), err  # names the file first
    assert "Traceback" not in err
    for part in expected:
        assert part in err, f"{part!r} missing from {err!r}"


# --- help ----------------------------------------------------------------------------------------

COMMANDS = {"plugins": ["name", "--json"], "validate": ["suite"], "run": ["--out", "--executor", "--address", "--retry-failed"],
            "evaluate": ["runs_dir", "--evaluation"], "leaderboard": ["runs_dir", "--out", "--format"],
            "new-plugin": ["name", "--kind", "--out"]}


def test_help_documents_every_command(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s", out, re.M), f"{command} missing from harness --help"
    assert "HARNESS_LOAD_PLUGINS" in out and "Exit codes" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(cli, command):
    code, out, _ = cli(command, "--help")
    assert code == 0
    assert out.startswith(f"usage: harness {command}")
    for option in COMMANDS[command]:
        assert option in out


def test_no_command_is_a_usage_error(cli):
    code, _, err = cli()
    assert code == 2 and "usage: harness" in err and "Traceback" not in err


# --- plugins -------------------------------------------------------------------------------------


class _Broken:
    @staticmethod
    @hookimpl
    def harness_register_datasets(register):
        raise OSError("cannot open /data/shards")


def test_plugins_json_is_exactly_list_plugins(cli, fake_on_path, use_registry):
    import harness
    import harness_fake

    use_registry(Registry(load_entrypoints=False, extra_plugins=[(harness_fake, "harness-fake"), (_Broken, "dist-broken")]))
    code, out, err = cli("plugins", "--json")
    assert code == 0
    assert json.loads(out) == harness.list_plugins()
    (tower,) = [p for p in json.loads(out) if p["name"] == "fake_tower"]
    assert {k: tower[k] for k in ("kind", "name", "distribution", "version", "description", "params")} == {
        "kind": "encoder", "name": "fake_tower", "distribution": "harness-fake", "version": "1.2.3",
        "description": "Fake two-tower encoder.", "params": {"dim": 8, "arch": "tiny", "pretrained": False}}
    assert tower["param_info"]["dim"] == {"type": "int", "default": 8, "required": False, "description": "",
                                          "limits": {}, "choices": None}
    assert err == "warning: plugin dist-broken failed in harness_register_datasets: OSError: cannot open /data/shards\n"


def test_plugins_table(cli, fake_registry):
    code, out, err = cli("plugins")
    assert code == 0 and err == ""
    header = out.splitlines()[0].split()
    assert header == ["kind", "name", "distribution", "description", "params", "extras"]
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if " fake_needs " in line)
    assert lines[at].split()[:4] == ["loss", "fake_needs", "harness-fake", "1.2.3"]
    assert "weight='<required>'" in lines[at] and "dim=4" in lines[at + 1]  # one parameter a line
    clip = next(i for i, line in enumerate(lines) if line.startswith("loss") and " clip " in line)
    cell = " ".join(lines[clip:clip + 4])
    assert "temperature=0.07 (>= 0.01, <= 100.0): initial temperature" in cell  # limits and description


def test_plugins_name_shows_one_plugin_in_full(cli, fake_registry):
    code, out, err = cli("plugins", "cua")
    assert code == 0 and err == ""
    assert out.startswith("loss cua  (contrastive-harness ")
    assert "extras: none" in out
    row = next(line for line in out.splitlines() if line.startswith("uniformity_weight "))
    assert row.split()[:5] == ["uniformity_weight", "float", "1.0", ">=", "0,"] and "in-modal uniformity" in row
    code, out, err = cli("plugins", "cau")
    assert code == 2 and out == "" and err.startswith("error: no plugin named 'cau' (did you mean 'cua'?)")
    code, out, _ = cli("plugins", "digits", "--json")
    (digits,) = json.loads(out)
    assert digits["supplies"] == ["caption_group"] and digits["param_info"]["image_size"]["limits"] == {"ge": 8, "le": 512}


# --- validate ------------------------------------------------------------------------------------


def test_validate_prints_the_grid(cli, fake_registry, write_suite):
    from harness.suite import expand, load_suite

    path = write_suite(GOOD_SUITE)
    code, out, err = cli("validate", str(path))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"{path}: suite 'mini' is valid: 4 job(s)"
    jobs = expand(load_suite(path))
    assert lines[1:] == [f"  {j.id}  {j.display}" for j in jobs]
    assert lines[3] == f"  {jobs[2].id}  fake_cua(uniformity_weight=2.0) | fake_tower | fake_shapes(n=8) | seed 0"


@pytest.mark.parametrize("path", BAD_SUITES, ids=lambda p: p.stem)
def test_bad_suite_is_one_line_and_exit_2(cli, fake_registry, path):
    assert _expected(path), f"{path.name} has no '# expect:' line"
    code, out, err = cli("validate", str(path))
    _assert_one_line_error(code, out, err, str(path), _expected(path))


def test_bad_suite_files_cover_the_issue(fake_registry):
    """The issue's list of malformed suites, each present among the fixtures (plus generated ones below)."""
    assert len(BAD_SUITES) >= 25
    names = {p.stem for p in BAD_SUITES}
    assert {"yaml_syntax", "top_level_list", "unknown_top_level_key", "unknown_train_key", "batch_size_type",
            "seeds_type", "batch_size_zero", "negative_lr", "betas_out_of_range", "negative_steps",
            "steps_and_epochs", "no_budget", "name_not_slug", "unknown_objective", "unknown_encoder",
            "unknown_dataset", "unknown_evaluation", "unknown_param", "bad_param_type", "param_rejected_by_factory",
            "duplicate_seeds", "same_job_twice", "duplicate_labels", "empty_objectives", "bad_save_entry",
            "negative_gpus"} <= names


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda tmp: tmp / "missing.yaml", "no such suite file"),
        (lambda tmp: tmp, "is a directory"),
        (lambda tmp: _write_bytes(tmp / "latin1.yaml", b"name: caf\xe9\n"), "not UTF-8 text (invalid byte at offset 9)"),
    ],
    ids=["missing_file", "directory", "not_utf8"],
)
def test_unreadable_suite_is_one_line_and_exit_2(cli, tmp_path, make, expected):
    path = make(tmp_path)
    code, out, err = cli("validate", str(path))
    _assert_one_line_error(code, out, err, str(path), [expected])


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_plugin_bug_is_one_line_pointing_to_a_log(cli, fake_registry, write_suite, monkeypatch):
    """A factory raising something other than ValueError/TypeError is a bug, not bad input: exit 1 + log."""
    monkeypatch.delenv("HARNESS_DEBUG", raising=False)
    path = write_suite(GOOD_SUITE.replace("  - fake_clip\n", "  - fake_crash\n"))
    code, out, err = cli("validate", str(path))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: internal error in `harness validate` (RuntimeError: kaboom: a bug inside the plugin)")
    log = Path(re.search(r"traceback: (\S+\.log)", err).group(1))
    text = log.read_text(encoding="utf-8")
    log.unlink()
    assert "Traceback (most recent call last)" in text and "RuntimeError: kaboom" in text and "fake_crash" in text


def test_harness_debug_reraises(cli, fake_registry, write_suite, monkeypatch):
    monkeypatch.setenv("HARNESS_DEBUG", "1")
    path = write_suite(GOOD_SUITE.replace("  - fake_clip\n", "  - fake_crash\n"))
    with pytest.raises(RuntimeError, match="kaboom"):
        cli("validate", str(path))


def test_a_plugin_conflict_is_one_line_and_exit_2(cli, fake_on_path, monkeypatch, use_registry):
    """Two distributions registering one name: the registry cannot be built; the CLI reports it."""
    import harness.registry as registry_mod
    import harness_fake

    class Again:
        harness_register_losses = staticmethod(harness_fake.harness_register_losses)

    real = registry_mod.Registry
    monkeypatch.setattr(registry_mod, "Registry", lambda: real(load_entrypoints=False, extra_plugins=[
        (harness_fake, "harness-fake"), (Again, "harness-fake-copy")]))
    use_registry(None)
    code, out, err = cli("plugins", "--json")
    assert code == 2 and out == ""
    assert err == ("error: loss plugin 'fake_clip' is registered twice: by harness-fake and by harness-fake-copy; "
                   "uninstall one or limit HARNESS_LOAD_PLUGINS\n")


# --- the real console script, in fresh processes ---------------------------------------------------


def test_console_script_plugins_json(run_harness, fake_on_path, monkeypatch):
    proc = run_harness("plugins", "--json", plugins="harness-fake,harness-broken")
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "harness-fake,harness-broken")
    assert json.loads(proc.stdout) == Registry().list()  # exactly list_plugins() in the same environment
    assert proc.stderr == ("warning: plugin harness-broken (harness_broken) failed to load: "
                           "ModuleNotFoundError: No module named 'harness_missing_dependency'\n")


def test_console_script_validate_ids_match_across_processes(run_harness, fake_registry, write_suite):
    from harness.suite import expand, load_suite

    path = write_suite(GOOD_SUITE)
    proc = run_harness("validate", str(path))
    assert proc.returncode == 0, proc.stderr
    ids = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
    assert ids == [j.id for j in expand(load_suite(path))]


def test_python_m_harness_cli_bad_suite(run_harness):
    path = FIXTURES / "bad_suites" / "unknown_objective.yaml"
    proc = run_harness("validate", str(path), module=True)
    _assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, str(path), _expected(path))
