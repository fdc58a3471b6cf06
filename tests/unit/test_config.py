"""config.yaml: the spec's schema, atomic writes, errors naming the file and line."""

import os
import stat

import pytest

from p_tasks import config, paths
from p_tasks.config import Config, WorkerEntry
from p_tasks.exceptions import ConfigError, UsageError, WorkerNotFound

SPEC_EXAMPLE = """\
default_worker: beefy
workers:
  - name: beefy
    connection: user@192.168.1.50
  - name: cloud
    connection: user@cloud-host.example.com
"""


def test_location_follows_xdg_config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert paths.config_file() == tmp_path / "cfg" / "p" / "config.yaml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert paths.config_file() == paths.Path.home() / ".config" / "p" / "config.yaml"


def test_spec_example_round_trips(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(SPEC_EXAMPLE)
    cfg = config.load(path)
    assert cfg.default == "beefy"
    assert cfg.get("cloud").connection == "user@cloud-host.example.com"
    config.save(cfg)
    assert path.read_text() == SPEC_EXAMPLE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_missing_file_means_local_default(tmp_path):
    cfg = config.load(tmp_path / "none.yaml")
    assert cfg.default == "local" and cfg.get("local").connection == "local"
    with pytest.raises(WorkerNotFound, match="worker 'gpu3' is not registered; see `p worker ls`"):
        cfg.get("gpu3")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("workers:\n  - name: a\n    connection: [unclosed\n", "line 4"),
        ("workers:\n\t- name: a\n", "line 2"),
        ("- just\n- a list\n", "expected a mapping"),
        ("workers: 3\n", "'workers' must be a list"),
        ("workers:\n  - name: a\n", "worker #1 needs string 'name' and 'connection'"),
        ("workers:\n  - {name: a, connection: b}\n  - {name: a, connection: c}\n", "listed twice"),
    ],
)
def test_malformed_file_names_file_and_problem_and_is_left_alone(tmp_path, text, fragment):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(path) in err.value.message and fragment in err.value.message
    assert "\n" not in err.value.message
    assert path.read_text() == text


def test_editing_saves_only_on_success(tmp_path):
    path = tmp_path / "p" / "config.yaml"
    with config.editing(path) as cfg:
        cfg.workers.append(WorkerEntry("a", "me@a"))
    with pytest.raises(RuntimeError), config.editing(path) as cfg:
        cfg.workers.append(WorkerEntry("b", "me@b"))
        raise RuntimeError("boom")
    assert [w.name for w in config.load(path).workers] == ["a"]


@pytest.mark.parametrize("name", ["", "-rf", "a b", "../x", "x/y", "é", "a" * 64])
def test_bad_worker_names_refused(name):
    with pytest.raises(UsageError):
        config.check_name(name)


def test_reserved_names_refused():
    with pytest.raises(UsageError, match="is a p subcommand"):
        config.check_name("ls", frozenset({"ls"}))


def test_config_dataclass_default_prefers_configured():
    assert Config(default_worker="x").default == "x"


def test_an_unknown_top_level_key_is_named_with_its_line(tmp_path):
    path = tmp_path / "config.yaml"
    text = "workers:\n  - name: a\n    connection: me@a\ndefault: a\n"
    with pytest.raises(ConfigError) as caught:
        config.parse(text, path)
    assert caught.value.message == (f"config file {path} line 4: unknown key 'default' (p reads "
                                    "default_worker, workers, sync_warn_mb, on_finish); fix the file")
