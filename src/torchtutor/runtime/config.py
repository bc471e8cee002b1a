"""Typed configs shared by both apps: nested dataclasses, turned into plain dicts and back.

Each app defines its configs as dataclasses whose `__post_init__` checks every value with a
one-line `ConfigError` (through runtime/options.py's checks); a recipe is an instance. This
module holds what both need: the error type, field-name checks, a nested `replace`, and the
dict round trip that run folders, checkpoints and config files use.
"""

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write_text
from torchtutor.runtime.options import check_count, check_positive, check_range

C = TypeVar("C")


class ConfigError(UserError, ValueError):
    """A config value out of range: one line for the user (UserError), and a ValueError for
    code that builds configs directly."""


def flag(name: str) -> str:
    """The option that sets config field `name` (each flag is named after its field)."""
    return "--" + name.replace("_", "-")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{flag(name)} must be one of {', '.join(choices)}, not {value!r}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{flag(name)} must be true or false, not {value!r}")


def checked(check, name: str, value: Any, *bounds) -> None:
    """`check(flag(name), value, *bounds)`, its UserError raised as a ConfigError."""
    try:
        check(flag(name), value, *bounds)
    except ConfigError:
        raise
    except UserError as exc:
        raise ConfigError(str(exc)) from None


def positive(name: str, value: Any, optional: bool = False) -> None:
    """A finite number above 0; with `optional`, None (unset) too."""
    if not (optional and value is None):
        checked(check_positive, name, value)


def fraction(name: str, value: Any) -> None:
    """A share in [0, 1)."""
    checked(check_range, name, value, 0, 1, False, True)


def count(name: str, value: Any, low: int = 1) -> None:
    checked(check_count, name, value, low)


def replace_nested(config: C, changes: dict[str, Any]) -> C:
    """`dataclasses.replace` with dotted names for nested configs ("model.hidden_size")."""
    own = {k: v for k, v in changes.items() if "." not in k}
    inner: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        if "." in key:
            head, rest = key.split(".", 1)
            inner.setdefault(head, {})[rest] = value
    for head, sub in inner.items():
        if head not in {f.name for f in dataclasses.fields(config)}:
            raise ConfigError(f"{type(config).__name__} has no section {head!r}")
        own[head] = replace_nested(getattr(config, head), sub)
    unknown = set(own) - {f.name for f in dataclasses.fields(config)}
    if unknown:
        raise ConfigError(f"unknown option {sorted(unknown)[0]!r} for "
                          f"{type(config).__name__}")
    return dataclasses.replace(config, **own)


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain dicts, lists and scalars (for JSON, YAML, TOML and checkpoints)."""
    return dataclasses.asdict(config)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"hidden_size": 8}} -> {"model.hidden_size": 8}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def from_dict(cls: type[C], values: dict[str, Any], source: str = "config",
              strict: bool = True) -> C:
    """Build `cls` from a dict such as `to_dict` gives, nested configs included.

    Keys the dataclass does not have are refused (a typo in a file must not be silently
    ignored) unless not `strict` (a run folder of another version). Missing keys take the
    defaults.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a table of options, not {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in known]
    if unknown and strict:
        raise ConfigError(f"{source}: unknown option {unknown[0]!r} for {cls.__name__}")
    kwargs = {}
    for name, value in values.items():
        if name not in known:
            continue
        kind = hints.get(name)
        if dataclasses.is_dataclass(kind):
            value = from_dict(kind, value, f"{source}: {name}", strict)
        elif _wants_float(kind) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)   # "lr: 1" in a file means 1.0
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _wants_float(kind: Any) -> bool:
    if kind is float:
        return True
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        args = typing.get_args(kind)
        return float in args and int not in args
    return False


# --- config files --------------------------------------------------------------------------

RUN_CONFIG = "config.yaml"   # every run folder's resolved config; `--config` reads it back


def config_text(config: Any) -> str:
    """The config as YAML: train options at the top, the model and data sections nested."""
    import yaml

    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)


def write_config_file(folder: str | os.PathLike, config: Any) -> Path:
    """FOLDER/config.yaml, written atomically."""
    return atomic_write_text(Path(folder) / RUN_CONFIG, config_text(config))


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML (.yaml, .yml) or TOML (.toml) config file as flat dotted options; one-line
    UserErrors for a missing or malformed file."""
    path = Path(path)
    if path.exists() and not path.is_file():   # /dev/zero would be read for ever
        raise UserError(f"config file {path} is not a regular file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text") from None
    if path.suffix == ".toml":
        import tomllib

        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            reason = " ".join(str(exc).split())
            raise UserError(f"config file {path} is not valid YAML: {reason[:160]}") from None
    else:
        raise UserError(f"config file {path} must end in .yaml, .yml or .toml")
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must hold a table of options")
    return flatten(values)
