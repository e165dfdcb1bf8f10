"""Dotted overrides: `--set key.path=value`, suites' and tune's `model.dropout: 0.5`."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from ablab.config.common import ConfigError


def nest_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """{"model.dropout": 0.5} -> {"model": {"dropout": 0.5}}; nested keys pass through."""
    tree: dict[str, Any] = {}
    for key, value in overrides.items():
        branch = nest_overrides(value) if isinstance(value, dict) else value
        for part in reversed(str(key).split(".")):
            branch = {part: branch}
        tree = deep_merge(tree, branch)
    return tree


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`key.path=value` -> (key.path, YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None
