"""cedana's configuration: a JSON file, ``CEDANA_<SECTION>_<FIELD>`` variables, flags.

Each field's value comes from the first of, highest first:

    a command-line flag              (``cedana --address ...``, ``dump --compression``)
    its environment variable         ``CEDANA_CHECKPOINT_COMPRESSION=lz4``
    the config file                  ``--config FILE`` (or ``$CEDANA_CONFIG``), else
                                     ``~/.cedana/config.json`` over ``/etc/cedana/config.json``
    the default

The file is JSON with a section per dotted name::

    {"address": "/run/cedana.sock", "checkpoint": {"compression": "lz4", "stream": 2}}

``cedana config show`` prints every field, its value and where it came from.
A wrong value or an unknown field is a ``ConfigError``: one line naming the
field (and where it was set) and what it may be.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cedana_gpu.errors import CedanaError

CONFIG_ENV = "CEDANA_CONFIG"
STATE_DIR_ENV = "CEDANA_STATE_DIR"
"""Also sets ``db.path`` (``<dir>/jobs.db``) at the environment's precedence."""
USER_FILE = Path("~/.cedana/config.json")
SYSTEM_FILE = Path("/etc/cedana/config.json")
DEFAULT_SOCKET = "/run/cedana.sock"

COMPRESSIONS = ("none", "tar", "lz4", "gzip", "zlib")
MAX_STREAMS = 64


class ConfigError(CedanaError):
    """A configuration value or file cannot be used (one line naming the field)."""


Parser = Callable[[Any], Any]


@dataclass(frozen=True)
class Field:
    name: str
    """Dotted: ``checkpoint.compression``."""
    parse: Parser
    """Raw value (JSON value, or a string from the environment/a flag) to the value;
    ValueError with the allowed values."""
    default: Any
    help: str

    @property
    def env(self) -> str:
        return "CEDANA_" + self.name.replace(".", "_").upper()


def _choice(*allowed: str) -> Parser:
    def parse(raw: Any) -> str:
        value = str(raw).strip().lower() if isinstance(raw, str) else raw
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return str(value)

    return parse


def _int(lo: int, hi: int | None = None) -> Parser:
    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise ValueError("must be a whole number")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ValueError("must be a whole number") from None
        if value < lo or (hi is not None and value > hi):
            raise ValueError(f"must be between {lo} and {hi}" if hi else f"must be {lo} or more")
        return value

    return parse


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    return raw


def _optional_path(raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not os.path.isabs(os.path.expanduser(raw)):
        raise ValueError("must be an absolute path")
    return os.path.expanduser(raw)


def _db_path(raw: Any) -> str | None:
    path = _optional_path(raw)
    if path is not None and Path(path).name != "jobs.db":
        # Every job's controller opens <state dir>/jobs.db: the store names the
        # state directory, it cannot be called otherwise.
        raise ValueError("must name a file called jobs.db (its directory is the state directory)")
    return path


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(raw: Any) -> int | None:
    if raw is None or raw == "" or raw == 0:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    m = _SIZE.match(str(raw))
    if m is None:
        raise ValueError("must be a size in bytes (64MiB, 1048576)")
    return int(m[1]) * _UNITS[(m[2] or "")[:1].lower()]


def _optional_text(raw: Any) -> str | None:
    return None if raw in (None, "") else _text(raw)


FIELDS: tuple[Field, ...] = (
    Field("address", _text, DEFAULT_SOCKET, "the daemon's socket path (unix) or host:port (tcp)"),
    Field("protocol", _choice("unix", "tcp"), "unix", "how to reach the daemon"),
    Field("log_level", _choice("debug", "info", "warning", "error"), "info", "daemon log level"),
    Field("checkpoint.dir", _optional_path, None, "where checkpoints go (default: state dir)"),
    Field("checkpoint.compression", _choice(*COMPRESSIONS), "none", "dump compression"),
    Field("checkpoint.stream", _int(1, MAX_STREAMS), 1, "shards written in parallel"),
    Field("criu.leave_running", _bool, False, "keep jobs running after a dump"),
    Field("gpu.engine", _choice("auto", "intercept", "driver"), "auto", "GPU engine of new jobs"),
    Field(
        "gpu.storage",
        _choice("auto", "host", "custom"),
        "auto",
        "driver engine dumps: GPU memory via host staging or custom storage",
    ),
    Field("gpu.pool_size", _int(0, 64), 0, "warm GPU controllers the daemon keeps"),
    Field("gpu.shm_size", _size, None, "staging bytes of a job's segment (default: built-in)"),
    Field("db.path", _db_path, None, "the job store (<state dir>/jobs.db)"),
    Field("auth.token", _optional_text, None, "token a TCP client must send"),
    Field("tls.cert", _optional_path, None, "daemon: its TLS certificate (PEM; TCP)"),
    Field("tls.key", _optional_path, None, "daemon: the private key of tls.cert"),
    Field("tls.client_ca", _optional_path, None, "daemon: require client certificates it signed"),
    Field("tls.ca", _optional_path, None, "client: the CA the daemon's certificate must chain to"),
    Field("tls.client_cert", _optional_path, None, "client: certificate shown to the daemon"),
    Field("tls.client_key", _optional_path, None, "client: the private key of tls.client_cert"),
)
BY_NAME = {f.name: f for f in FIELDS}


@dataclass
class Config:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    """Where each value came from: ``default``, ``file <path>``, ``env <NAME>``, ``flag``."""
    files: list[Path] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def rows(self) -> list[tuple[str, Any, str]]:
        return [(f.name, self.values[f.name], self.sources[f.name]) for f in FIELDS]

    def state_dir(self) -> Path | None:
        """The state directory ``db.path`` names, or None (the default one)."""
        db = self.values.get("db.path")
        return Path(db).parent if db else None


def _flatten(doc: Any, where: str, prefix: str = "") -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: {prefix or 'the file'} must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if name in BY_NAME:
            out[name] = value
        elif isinstance(value, dict) and any(f.startswith(name + ".") for f in BY_NAME):
            out.update(_flatten(value, where, name + "."))
        else:
            raise ConfigError(f"{where}: unknown field {name!r} (fields: {', '.join(BY_NAME)})")
    return out


def read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not JSON: {e.msg} at line {e.lineno}") from None
    return _flatten(doc, f"config file {path}")


def default_files(env: Mapping[str, str]) -> list[Path]:
    """The files read without ``--config``, lowest first (those that exist)."""
    home = env.get("HOME")
    user = Path(home) / ".cedana" / "config.json" if home else USER_FILE.expanduser()
    return [p for p in (SYSTEM_FILE, user) if _exists(p)]


def _exists(path: Path) -> bool:
    """Whether ``path`` is a file; one behind a directory we may not enter is not ours."""
    try:
        return path.is_file()
    except OSError:
        return False


def load(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """The effective configuration. ``flags``: field name to value, unset ones left out
    (or None)."""
    env = os.environ if env is None else env
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    files = [config_file] if config_file is not None else default_files(env)
    layers: list[tuple[str, dict[str, Any]]] = [(f"file {p}", read_file(p)) for p in files]
    cfg = Config(files=list(files))
    for f in FIELDS:
        value, source = f.default, "default"
        for where, doc in layers:
            if f.name in doc:
                value, source = _parse(f, doc[f.name], where), where
        raw = env.get(f.env)
        if raw is not None and raw != "":
            value, source = _parse(f, raw, f"env {f.env}"), f"env {f.env}"
        elif f.name == "db.path" and env.get(STATE_DIR_ENV):
            # The state directory's own variable, older than the configuration.
            raw = os.path.join(env[STATE_DIR_ENV], "jobs.db")
            value, source = _parse(f, raw, f"env {STATE_DIR_ENV}"), f"env {STATE_DIR_ENV}"
        if flags is not None and flags.get(f.name) is not None:
            value, source = _parse(f, flags[f.name], "flag"), "flag"
        cfg.values[f.name] = value
        cfg.sources[f.name] = source
    if cfg.values["protocol"] == "tcp" and ":" not in cfg.values["address"]:
        raise ConfigError(
            f"address {cfg.values['address']!r} ({cfg.sources['address']}) must be host:port "
            "with protocol tcp"
        )
    return cfg


def _parse(f: Field, raw: Any, where: str) -> Any:
    try:
        return f.parse(raw)
    except ValueError as e:
        raise ConfigError(f"{f.name} = {raw!r} ({where}) {e}") from None


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
