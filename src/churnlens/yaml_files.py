"""Reading the YAML files a user hands churnlens (configurations, policies) safely.

The safe loader only (nothing in a file is executed), and two limits checked before the
document is built: 1 MB of text and 100,000 values once aliases are expanded (a 340-byte
alias bomb would otherwise expand to a million). Errors are :class:`ConfigError` lines
naming the file; a value echoed in an error is cut to 200 characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from churnlens.errors import ConfigError

MAX_YAML_BYTES = 1_000_000  # a configuration or policy is a few kilobytes
MAX_YAML_NODES = 100_000  # values after expanding aliases (a 340-byte alias bomb: 10^6)
MAX_ECHO = 200  # characters of a value echoed in an error message


def shorten(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def expanded_size(node: yaml.Node, seen: dict[int, int] | None = None) -> int:
    """How many values a composed YAML document holds once its aliases are expanded
    (an alias re-uses a node: counted once per use, computed once per node)."""
    seen = {} if seen is None else seen
    if id(node) in seen:
        return seen[id(node)]
    seen[id(node)] = 1  # a recursive alias counts once, never loops
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(expanded_size(child, seen) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(expanded_size(k, seen) + expanded_size(v, seen) for k, v in node.value)
    seen[id(node)] = size
    return size


def read_yaml(path: str | Path, kind: str = "configuration") -> tuple[Path, Mapping[str, Any]]:
    """The resolved path and the mapping in a YAML file (safe loader, nothing executed;
    a file over 1 MB or holding over 100,000 values once aliases are expanded is
    refused before it is built)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"{path}: {kind} file not found")
    if path.stat().st_size > MAX_YAML_BYTES:
        size = path.stat().st_size
        raise ConfigError(f"{path}: {size:,} bytes is too large for a {kind} file (1 MB at most)")
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and expanded_size(node) > MAX_YAML_NODES:
            raise ConfigError(
                f"{path}: its aliases expand to more than {MAX_YAML_NODES:,} values; "
                f"a {kind} file needs no such nesting (an alias bomb?). Write the values out"
            )
        data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {shorten(str(exc))}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return path, data
