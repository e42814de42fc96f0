"""The configuration: file < CEDANA_<SECTION>_<FIELD> < flag, and one line for a wrong value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cr_helpers import REPO, assert_one_line_error, clean_env

from cedana_gpu import config
from cedana_gpu.config import ConfigError


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_file_then_env_then_flag(tmp_path: Path) -> None:
    f = write(
        tmp_path / "c.json",
        {"address": "/tmp/a.sock", "checkpoint": {"compression": "lz4", "stream": 2}},
    )
    env = {"CEDANA_CHECKPOINT_COMPRESSION": "gzip", "HOME": str(tmp_path)}
    cfg = config.load({"checkpoint.stream": 4}, config_file=f, env=env)
    assert (cfg["address"], cfg.sources["address"]) == ("/tmp/a.sock", f"file {f}")
    assert (cfg["checkpoint.compression"], cfg.sources["checkpoint.compression"]) == (
        "gzip",
        "env CEDANA_CHECKPOINT_COMPRESSION",
    )
    assert (cfg["checkpoint.stream"], cfg.sources["checkpoint.stream"]) == (4, "flag")
    assert (cfg["protocol"], cfg.sources["protocol"]) == ("unix", "default")


def test_the_user_file_overrides_the_system_file_and_config_env_names_one(
    tmp_path: Path,
) -> None:
    user = tmp_path / ".cedana" / "config.json"
    user.parent.mkdir()
    write(user, {"log_level": "debug"})
    cfg = config.load(env={"HOME": str(tmp_path)})
    assert (cfg["log_level"], cfg.sources["log_level"]) == ("debug", f"file {user}")
    other = write(tmp_path / "other.json", {"gpu": {"pool_size": 2}})
    cfg = config.load(env={"HOME": str(tmp_path), "CEDANA_CONFIG": str(other)})
    assert cfg["gpu.pool_size"] == 2 and cfg["log_level"] == "info"


def test_values_are_parsed_and_checked(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "CEDANA_CRIU_LEAVE_RUNNING": "yes",
        "CEDANA_GPU_SHM_SIZE": "64MiB",
        "CEDANA_DB_PATH": str(tmp_path / "s" / "jobs.db"),
    }
    cfg = config.load(env=env)
    assert cfg["criu.leave_running"] is True
    assert cfg["gpu.shm_size"] == 64 << 20
    assert cfg.state_dir() == tmp_path / "s"


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"CEDANA_CHECKPOINT_COMPRESSION": "zip"},
            "checkpoint.compression = 'zip' (env CEDANA_CHECKPOINT_COMPRESSION) must be one "
            "of none, tar, lz4, gzip, zlib",
        ),
        (
            {"CEDANA_CHECKPOINT_STREAM": "0"},
            "checkpoint.stream = '0' (env CEDANA_CHECKPOINT_STREAM) must be between 1 and 64",
        ),
        (
            {"CEDANA_PROTOCOL": "tcp"},
            "address '/run/cedana.sock' (default) must be host:port with protocol tcp",
        ),
        (
            {"CEDANA_DB_PATH": "/x/store.sqlite"},
            "db.path = '/x/store.sqlite' (env CEDANA_DB_PATH) must name a file called jobs.db "
            "(its directory is the state directory)",
        ),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_field(
    tmp_path: Path, env: dict[str, str], line: str
) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(env={"HOME": str(tmp_path), **env})
    assert str(e.value) == line


def test_an_unknown_field_names_the_known_ones(tmp_path: Path) -> None:
    f = write(tmp_path / "c.json", {"checkpoint": {"compresion": "lz4"}})
    with pytest.raises(ConfigError) as e:
        config.load(config_file=f, env={})
    assert str(e.value).startswith(f"config file {f}: unknown field 'checkpoint.compresion' (")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError) as e:
        config.load(config_file=bad, env={})
    assert str(e.value).startswith(f"config file {bad} is not JSON")


def cedana(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cedana_gpu", *args],
        env=clean_env(tmp_path / "state", HOME=str(tmp_path), **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_show_says_where_each_value_came_from(tmp_path: Path) -> None:
    f = write(tmp_path / "c.json", {"address": "/tmp/file.sock", "log_level": "warning"})
    out = cedana(
        tmp_path,
        "--config",
        str(f),
        "--address",
        "/tmp/flag.sock",
        "config",
        "show",
        "-o",
        "json",
        CEDANA_LOG_LEVEL="error",
        CEDANA_AUTH_TOKEN="hidden",
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["address"] == {"value": "/tmp/flag.sock", "source": "flag"}
    assert shown["log_level"] == {"value": "error", "source": "env CEDANA_LOG_LEVEL"}
    assert shown["checkpoint.compression"] == {"value": "none", "source": "default"}
    assert shown["auth.token"] == {"value": "(set)", "source": "env CEDANA_AUTH_TOKEN"}
    assert list(shown) == [f.name for f in config.FIELDS]
    table = cedana(tmp_path, "--config", str(f), "config", "show")
    rows = {ln.split()[0]: ln.split() for ln in table.stdout.splitlines()[1:]}
    assert rows["address"] == ["address", "/tmp/file.sock", "file", str(f)]


def test_the_cli_says_a_wrong_value_in_one_line(tmp_path: Path) -> None:
    out = cedana(tmp_path, "ps", CEDANA_CHECKPOINT_STREAM="many")
    line = assert_one_line_error(out)
    assert line == (
        "cedana: error: checkpoint.stream = 'many' (env CEDANA_CHECKPOINT_STREAM) must be "
        "a whole number"
    )


def test_db_path_names_the_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "elsewhere"
    out = cedana(tmp_path, "--no-server", "ps", "-o", "json",
                 CEDANA_DB_PATH=str(state / "jobs.db"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    assert (state / "jobs.db").is_file()


def test_the_state_dir_variable_is_db_path_at_env_precedence(tmp_path: Path) -> None:
    f = write(tmp_path / "c.json", {"db": {"path": str(tmp_path / "file" / "jobs.db")}})
    cfg = config.load(config_file=f, env={"CEDANA_STATE_DIR": str(tmp_path / "env")})
    assert cfg["db.path"] == str(tmp_path / "env" / "jobs.db")
    assert cfg.sources["db.path"] == "env CEDANA_STATE_DIR"
    assert config.load(config_file=f, env={}).state_dir() == tmp_path / "file"


def test_the_example_config_is_valid() -> None:
    example = REPO / "packaging" / "config.example.json"
    cfg = config.load(config_file=example, env={})
    assert {name for name, _v, source in cfg.rows() if source == f"file {example}"} >= {
        "address",
        "checkpoint.compression",
        "db.path",
    }
    # Every field a user may set is named in it (TCP's token and TLS files too).
    doc = json.loads(example.read_text())
    named = {f"{s}.{k}" for s, body in doc.items() if isinstance(body, dict) for k in body}
    assert named >= {"auth.token", "tls.cert", "tls.key", "tls.client_ca", "tls.ca"}
