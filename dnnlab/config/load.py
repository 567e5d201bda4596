"""Reading a config: the guarded YAML loader, `--set KEY=VALUE` overrides, validation with
errors that name the dotted key, the value and the fix, and the YAML and JSON Schema written back.
"""

from __future__ import annotations

import difflib
import os
import stat
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from dnnlab.config.names import MAX_MODEL_BYTES, ConfigError
from dnnlab.config.schema import Config, _literal_of, _section_model
from dnnlab.config.sizing import size_error
from dnnlab.config.warnings import config_warnings

# ---------------------------------------------------------------- loading and errors


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of YAML; anything larger is a mistake
MAX_YAML_DEPTH = 32  # a config nests 4 deep (sweep.variants[i].key); 3,000 deep overflowed the stack


class _YamlRefused(yaml.MarkedYAMLError):
    """YAML that parses but that a config may not use: an alias or anchor, deep nesting, a duplicate key."""


class _ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader without aliases and anchors (a 371-byte "billion laughs" file expanded to
    gigabytes), with nesting capped at MAX_YAML_DEPTH and duplicate keys refused."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise _YamlRefused(
                problem=f"YAML aliases and anchors ({sign}{event.anchor}) are not allowed in a config; write the values out",
                problem_mark=event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlRefused(problem=f"nested more than {MAX_YAML_DEPTH} levels deep", problem_mark=event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_keys(node: yaml.Node, path: str = "", lines: bool = True) -> None:
    """Refuse a key given twice in one mapping (YAML would keep the last silently); `path` is
    the dotted key of `node`, `lines` whether to name the lines (a file's, not a --set value's)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None:
                if key in seen:
                    where = f" (lines {seen[key]} and {line})" if lines else ""
                    raise _YamlRefused(
                        problem=f"{path}{key} is given twice{where}; merge them into one, or delete one",
                        problem_mark=key_node.start_mark,
                    )
                seen[key] = line
            _check_keys(value_node, f"{path}{key}." if key is not None else path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_keys(item, f"{path.removesuffix('.')}[{i}].", lines)


_EMPTY = object()  # `_parse_yaml` of a document with no content


def _parse_yaml(text: str, key: str = "") -> Any:
    """The value of one YAML document through _ConfigLoader, or _EMPTY; raises yaml.YAMLError.
    `key`: the dotted key the document is the value of (a --set value's), for the messages."""
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return _EMPTY
        _check_keys(node, f"{key}." if key else "", lines=not key)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def safe_yaml(text: str, key: str = "") -> Any:
    """Any YAML text dnnlab reads (a config file, a --set or --grid value, a remedy's setting)
    through the one guarded loader: no aliases, capped nesting, no duplicate keys; None when empty.
    Raises yaml.YAMLError (a refusal included) for the caller to word."""
    value = _parse_yaml(text, key)
    return None if value is _EMPTY else value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """`line L, column C: problem` of a YAML error."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}: {problem}"


def _read_text(path: Path) -> str:
    """The text of a regular file of at most MAX_CONFIG_BYTES; ConfigError otherwise (a FIFO must not hang)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path}: is a folder; give the path of a YAML config file")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file (a pipe or a device); give the path of a YAML config file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {info.st_size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,} bytes")
        try:
            data = fh.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc}); a config file is YAML") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """The raw mapping of a YAML config file; ConfigError names the file (and line) when it cannot be used.

    Only a regular file of at most MAX_CONFIG_BYTES is read; aliases and anchors, nesting deeper
    than MAX_YAML_DEPTH, duplicate keys and an empty document are refused.
    """
    path = Path(path)
    text = _read_text(path)
    try:
        raw = _parse_yaml(text)
    except _YamlRefused as exc:
        raise ConfigError(f"{path}: {_yaml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML at {_yaml_problem(exc)}") from None
    if raw is _EMPTY or raw is None:
        raise ConfigError(f"{path}: is empty; write the settings to train with, e.g. a copy of configs/quickstart.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (name, data, model, ...), "
            f"got a {type(raw).__name__}"
        )
    return raw


def parse_value(text: str, where: str, key: str = "") -> Any:
    """A `--set` or `--grid` VALUE of dotted `key` parsed as YAML (an empty VALUE is null).

    Raises ConfigError naming `where` (e.g. `--set 'model.depth=x'`) and the value.
    """
    if not text.strip():
        return None
    try:
        value = _parse_yaml(text, key)
    except _YamlRefused as exc:
        raise ConfigError(f"{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        problem = _yaml_problem(exc).split(": ", 1)[-1]
        raise ConfigError(
            f"{where}: the value {text!r} is not valid YAML ({problem}); e.g. model.hidden=[512,256], "
            "or quote text: name='\"a: b\"'"
        ) from None
    return None if value is _EMPTY else value


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A config mapping by dotted keys: {"model": {"depth": 2}} -> {"model.depth": 2}; lists stay
    values. (compare's columns, a resume's changed keys, the run's recorded inputs, HParams.)"""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


# an override of the key replaces what `raw` (the file) says of the same thing with these keys:
# `--set model.hidden=[512,256]` on a config of depth and width trains those two layers (the
# override is the newer intent); an override that sets both is still refused by the schema
REPLACES = {"model.hidden": ("model.depth", "model.width")}


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with `KEY=VALUE` overrides applied; VALUE is parsed as YAML (`parse_value`).
    An override of a key of REPLACES (to a value, not null) drops the keys it replaces from `raw`,
    unless an override sets them too."""
    out = _deep_copy(raw)
    given: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.depth=8")
        value = parse_value(text, f"--set {item!r}", key)
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {item!r}: {prefix} is a value, not a section")
            node = child
        node[parts[-1]] = value
        given[key] = value
    for key, replaced in REPLACES.items():
        if given.get(key) is not None:
            for other in replaced:
                section, _, leaf = other.rpartition(".")
                node = out.get(section)
                if other not in given and isinstance(node, dict):
                    node.pop(leaf, None)
    return out


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj


def _format_error(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in loc) or "config"
    kind = err["type"]
    given = err.get("input")
    if kind == "extra_forbidden":
        owner = _section_model(loc)
        known = list(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        parent = ".".join(str(p) for p in loc[:-1])
        if close:
            hint = f"did you mean {parent + '.' if parent else ''}{close[0]}?"
        else:
            hint = f"valid keys{' of ' + parent if parent else ''}: {', '.join(known)}"
        return f"{path}: unknown key; {hint}"
    if kind == "literal_error":
        allowed = [str(a) for a in get_args(_literal_of(loc))] or []
        close = difflib.get_close_matches(str(given), allowed, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"{path}: {given!r} is not one of: {', '.join(allowed)}{hint}"
    if kind == "missing":
        return f"{path}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error" and (not loc or isinstance(given, dict)):
        return f"{path + ': ' if loc else ''}{msg}"
    if kind == "model_type" or kind == "dict_type":
        return f"{path}: expected a section (a mapping of keys), got {given!r}"
    return f"{path}: {msg.replace('Input should be', 'must be')} (got {given!r})"


def validate(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a raw mapping into a Config, or raise ConfigError with every problem."""
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(e) for e in exc.errors()]
        raise ConfigError(f"{source}: invalid config\n" + "\n".join(f"  {ln}" for ln in lines)) from None
    # an absurd model (width 1e9) is refused here, whatever the machine; `check_size` holds a run
    # to the machine's memory once the data are loaded
    problem = size_error(cfg, limit_bytes=MAX_MODEL_BYTES)
    if problem is not None:
        raise ConfigError(f"{source}: invalid config\n  {problem}")
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file, apply `--set` overrides and validate it.

    Args:
        path: the YAML file.
        overrides: `KEY=VALUE` strings with dotted keys; values are parsed as YAML.
    Returns:
        The validated, frozen Config. Raises ConfigError with a readable message.
    """
    return load_config_with_warnings(path, overrides)[0]


def load_config_with_warnings(path: str | Path, overrides: list[str] | None = None) -> tuple[Config, list[str]]:
    """`load_config`, and the `config_warnings` of what the file and the overrides set.

    Returns:
        (the validated Config, one message per option set but not honoured). Raises ConfigError.
    """
    path = Path(path)
    raw = apply_overrides(read_yaml(path), overrides or [])
    cfg = validate(raw, source=str(path))
    return cfg, config_warnings(cfg, raw)


def to_dict(cfg: Config) -> dict[str, Any]:
    """The fully resolved config as plain data (defaults included)."""
    return cfg.model_dump(mode="json")


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML text that `load_config` reads back to an equal Config."""
    return yaml.dump(to_dict(cfg), Dumper=_PlainDumper, sort_keys=False)


class _PlainDumper(yaml.SafeDumper):
    """SafeDumper that writes a shared value out each time: `read_yaml` refuses aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def json_schema() -> dict[str, Any]:
    """JSON Schema of the config file, for editors' YAML validation."""
    schema = Config.model_json_schema()
    schema["title"] = "dnnlab config"
    return schema
