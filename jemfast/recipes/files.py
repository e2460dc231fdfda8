"""Recipe files: finding them, reading them over the defaults, ``section.key=value`` overrides, saving.

A recipe is a YAML file of sections (:mod:`jemfast.recipes.config`) that states only
what differs from the defaults (the paper's setting). ``jemfast config NAME`` prints a
recipe with every value filled in.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import textwrap
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from jemfast.recipes.config import METHODS, SECTIONS, ConfigError, RunConfig

__all__ = [
    "CONFIG_NAME",
    "recipe_names",
    "recipe_path",
    "read_config_file",
    "parse_override",
    "apply_overrides",
    "load_config",
    "save_config",
    "config_yaml",
]

CONFIG_NAME = "config.yaml"
# Help longer than this goes on comment lines above its key in config_yaml(annotate=True).
_INLINE_HELP = 60
_SECTION_KEYS = {section.NAME: section.specs() for section in SECTIONS}


def recipe_names() -> list[str]:
    """Names of the recipes shipped in ``jemfast/configs`` (e.g. age, demo, emotion, language)."""
    folder = resources.files("jemfast") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """The file of a recipe given by package name or by path; ConfigError when neither exists."""
    text = str(name_or_path)
    path = Path(text)
    if path.is_file():
        return path
    if path.suffix == "" and "/" not in text and os.sep not in text:
        packaged = resources.files("jemfast") / "configs" / f"{text}.yaml"
        if packaged.is_file():
            return Path(str(packaged))
    raise ConfigError(f"config {text!r} is neither a file nor a packaged recipe; recipes: {', '.join(recipe_names())}")


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a YAML config file into a (possibly partial) nested dict; ConfigError on bad YAML."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``"section.key=value"`` into (section, key, value), the value parsed as a YAML scalar or list."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. train.epochs=3)")
    dotted, raw = text.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r}: the key must be section.key (e.g. model.width), got {dotted!r}")
    section, key = parts
    if section not in _SECTION_KEYS:
        raise ConfigError(f"override {text!r}: unknown section {section!r}; expected one of {sorted(_SECTION_KEYS)}")
    if key not in _SECTION_KEYS[section]:
        keys = ", ".join(sorted(_SECTION_KEYS[section]))
        raise ConfigError(f"override {text!r}: unknown key {section}.{key}; {section} has {keys}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: cannot parse value {raw!r}") from None
    if isinstance(value, dict):
        raise ConfigError(f"override {text!r}: the value must be a scalar or a list, got a mapping")
    return section, key, value


def apply_overrides(config: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """A checked copy of ``config`` with each ``section.key=value`` override applied."""
    changes = {}
    for text in overrides:
        section, key, value = parse_override(text)
        changes[f"{section}.{key}"] = value
    return config.updated(changes) if changes else config


def load_config(
    name_or_path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    method: str | None = None,
) -> RunConfig:
    """Defaults, then the recipe file (package name or path; None: defaults only), then ``method``, then overrides.

    Returns the checked :class:`RunConfig`. Raises ConfigError for a missing recipe,
    bad YAML, an unknown method or any invalid key.
    """
    data: dict[str, Any] = {}
    where = ""
    if name_or_path is not None:
        path = recipe_path(name_or_path)
        data, where = read_config_file(path), str(path)
    changes: dict[tuple[str, str], Any] = {}
    if method is not None:
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        changes["train", "method"] = method
    for text in overrides:
        section, key, value = parse_override(text)
        changes[section, key] = value
    # Merged before checking, so an override can mend what the file and the method leave
    # inconsistent (e.g. --method softmax --set train.p_x_weight=null over the demo recipe).
    data = {name: dict(values) if isinstance(values, dict) else values for name, values in data.items()}
    for (section, key), value in changes.items():
        if data.get(section) is None:
            data[section] = {}
        elif not isinstance(data[section], dict):
            continue  # from_dict names the malformed section, with the file
        data[section][key] = value
    # Unknown sections and keys of the file are named with the file; value errors name the key.
    return RunConfig.from_dict(data, where)


def config_yaml(config: RunConfig, annotate: bool = False) -> str:
    """The config as YAML, every section and key in declaration order.

    ``annotate`` adds each key's help (:func:`jemfast.recipes.config.setting`) as a comment.
    """
    if not annotate:
        return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)
    lines = []
    for section in SECTIONS:
        lines.append(f"{section.NAME}:")
        helps = section.help()
        for key, value in getattr(config, section.NAME).to_dict().items():
            text = yaml.safe_dump(value, default_flow_style=True, width=1000).removesuffix("\n...\n").strip()
            line, note = f"  {key}: {text}", helps[key]
            if len(note) > _INLINE_HELP:  # a long help goes above its key
                lines.extend(textwrap.wrap(note, 88, initial_indent="  # ", subsequent_indent="  # "))
            elif note:
                line = f"{line:<32} # {note}"
            lines.append(line)
    return "\n".join(lines) + "\n"


def save_config(config: RunConfig, path: str | os.PathLike) -> Path:
    """Write a config as YAML (every key with its help, see :func:`config_yaml`) and return the path.

    The file is replaced atomically: a reader (``jemfast evaluate`` of a run being
    resumed) or a crash mid-write sees the old config or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = config_yaml(config, annotate=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # Mode 0o666 less the umask, as a plain write would create it (mkstemp would make it private).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
