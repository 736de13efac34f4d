"""Read a policy file into plain data, keeping the line and column of every node.

PyYAML composes the node graph (with marks) and we construct the data ourselves, which is
where hostile input is refused: oversized files, alias expansion bombs, deep nesting,
non-string keys and duplicate keys. `${VAR}` references are replaced here too, with each
missing variable reported at the place it is used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.policy.diagnostics import Diagnostic, json_path

MAX_BYTES = 1_000_000
"""Largest policy file accepted; real policies are a few kilobytes."""
MAX_NODES = 100_000
"""Nodes constructed, aliases counted each time they are expanded (stops billion-laughs)."""
MAX_DEPTH = 64

PathT = tuple[str | int, ...]
_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq"))
_WHOLE_VAR = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(slots=True)
class Located:
    """Plain data read from YAML plus where every node came from.

    `positions[path]` is the (line, col) of the value at `path`; `key_positions[path]` that of
    the mapping key naming it. `env_paths` are the paths whose value came from `${VAR}`;
    `missing_env` maps each path to the variables that were not set there.
    """

    data: Any
    source: str
    positions: dict[PathT, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[PathT, tuple[int, int]] = field(default_factory=dict)
    env_paths: set[PathT] = field(default_factory=set)
    missing_env: dict[PathT, list[str]] = field(default_factory=dict)

    def where(self, path: PathT, *, key: bool = False) -> tuple[int, int]:
        """Best known (line, col) for `path`, walking up to the nearest located ancestor."""
        p = tuple(path)
        while True:
            if key and p in self.key_positions:
                return self.key_positions[p]
            if p in self.positions:
                return self.positions[p]
            if p in self.key_positions:
                return self.key_positions[p]
            if not p:
                return (1, 1)
            p = p[:-1]

    def diag(self, code: str, message: str, path: PathT, *, severity: str = "error", key: bool = False) -> Diagnostic:
        """A diagnostic positioned at `path`."""
        line, col = self.where(path, key=key)
        return Diagnostic(
            code=code, severity=severity, message=message,  # type: ignore[arg-type]
            path=json_path(path), file=self.source, line=line, col=col,
        )


class LoadFailed(Exception):
    """Raised inside the loader; carries the diagnostics gathered so far."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__(diagnostics[0].format() if diagnostics else "load failed")
        self.diagnostics = diagnostics


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a composed YAML node graph into data, enforcing our limits."""

    def __init__(self, loc: Located, env: Mapping[str, str]) -> None:
        self.loc = loc
        self.env = env
        self.nodes = 0
        self.errors: list[Diagnostic] = []
        self._scalar = yaml.SafeLoader("")  # only used for its scalar constructors

    def error(self, code: str, message: str, node: yaml.Node, path: PathT) -> None:
        line, col = _mark(node)
        self.errors.append(Diagnostic(code=code, severity="error", message=message, path=json_path(path),
                                      file=self.loc.source, line=line, col=col))

    def build(self, node: yaml.Node, path: PathT, depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.error("yaml-too-many-nodes", f"document expands to more than {MAX_NODES} nodes "
                       "(an alias/anchor expansion bomb?); policies never need this many", node, path)
            raise LoadFailed(self.errors)
        if depth > MAX_DEPTH:
            self.error("yaml-too-deep", f"nesting deeper than {MAX_DEPTH} levels", node, path)
            raise LoadFailed(self.errors)
        self.loc.positions.setdefault(path, _mark(node))
        if node.tag not in _PLAIN_TAGS:
            # explicit tags (`!!python/name:...`, `!custom`) have no meaning in a policy
            hint = " (YAML reads it as a date: quote it)" if node.tag.endswith(":timestamp") else ""
            self.error("yaml-tag", f"YAML tag {node.tag!r} is not allowed in a policy{hint}", node, path)
            return None
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        value = self._scalar.construct_object(node)
        if isinstance(value, str):
            out = self.substitute(value, path)
            if out is not value and isinstance(node, yaml.ScalarNode) and node.style is None and \
                    _WHOLE_VAR.fullmatch(value):
                # an unquoted `${VAR}` standing alone takes the YAML type of its value, so
                # `timeout_s: ${TIMEOUT:-30}` is a number; quote it to keep a string
                return _typed(out)
            return out
        if not isinstance(value, (int, float, bool, type(None))):
            # timestamps, binary...: a policy has no use for them and they do not survive JSON
            self.error("yaml-type", f"unsupported YAML value of type {type(value).__name__} (tag {node.tag})",
                       node, path)
            return None
        return value

    def mapping(self, node: yaml.MappingNode, path: PathT, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        pairs = list(node.value)
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for k, v in pairs:
            if k.tag == "tag:yaml.org,2002:merge":
                # `<<: *anchor` (or a list of them): earlier keys win, as in YAML 1.1
                sources = v.value if isinstance(v, yaml.SequenceNode) else [v]
                for src in sources:
                    if not isinstance(src, yaml.MappingNode):
                        self.error("yaml-merge", "`<<` must merge a mapping", src, path)
                        continue
                    merged.extend(src.value)
        own_keys = set()
        for k, v in pairs:
            if k.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.key(k, path)
            if key is None:
                continue
            if key in own_keys:
                line, _ = self.loc.key_positions[path + (key,)]
                self.error("yaml-duplicate-key", f"duplicate key {key!r} (first defined on line {line})", k,
                           path + (key,))
                continue
            own_keys.add(key)
            self.loc.key_positions[path + (key,)] = _mark(k)
            out[key] = self.build(v, path + (key,), depth + 1)
        for k, v in merged:
            key = self.key(k, path)
            if key is not None and key not in out:
                self.loc.key_positions.setdefault((*path, key), _mark(k))
                out[key] = self.build(v, path + (key,), depth + 1)
        return out

    def key(self, k: yaml.Node, path: PathT) -> str | None:
        if not isinstance(k, yaml.ScalarNode) or k.tag != "tag:yaml.org,2002:str":
            shown = k.value if isinstance(k, yaml.ScalarNode) else type(k).__name__
            hint = " (quote it: YAML reads yes/no/on/off as booleans)" if str(shown).lower() in {
                "yes", "no", "on", "off", "true", "false", "y", "n"} else " (quote it)"
            self.error("yaml-key-type", f"mapping key {shown!r} is not a string{hint}", k, path)
            return None
        return str(k.value)

    def substitute(self, value: str, path: PathT) -> str:
        if "$" not in value:
            return value
        missing: list[str] = []

        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            missing.append(name)
            return ""

        out = _VAR.sub(repl, value)
        self.loc.env_paths.add(path)
        if missing:
            self.loc.missing_env[path] = missing
        return out


def _typed(text: str) -> Any:
    """`text` as YAML would read an unquoted scalar: int, float, bool, null, else the string."""
    resolved = yaml.SafeLoader("").resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    if resolved in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
                    "tag:yaml.org,2002:null"):
        return yaml.safe_load(text)
    return text


def read_policy_text(path: str | Path) -> tuple[str, str]:
    """(text, display name) of a policy file, refusing oversized or non-UTF-8 files."""
    p = Path(path)
    name = str(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise LoadFailed([Diagnostic(code="io", severity="error", message=f"cannot read policy: {e.strerror}",
                                     file=name)]) from None
    if size > MAX_BYTES:
        raise LoadFailed([Diagnostic(code="too-large", severity="error",
                                     message=f"policy file is {size:,} bytes; the limit is {MAX_BYTES:,}",
                                     file=name, line=1, col=1)])
    try:
        return p.read_bytes().decode("utf-8"), name
    except UnicodeDecodeError as e:
        raise LoadFailed([Diagnostic(code="encoding", severity="error",
                                     message=f"policy is not UTF-8 (byte {e.start})", file=name)]) from None


def load_yaml(text: str, source: str = "<policy>", env: Mapping[str, str] | None = None) -> Located:
    """Parse `text` into data with positions; raises `LoadFailed` with diagnostics."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise LoadFailed([Diagnostic(code="too-large", severity="error",
                                     message=f"policy is over {MAX_BYTES:,} bytes", file=source, line=1, col=1)])
    loc = Located(data=None, source=source)
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        msg = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        raise LoadFailed([Diagnostic(code="yaml-syntax", severity="error", message=f"YAML syntax: {msg}",
                                     file=source, line=line, col=col)]) from None
    except yaml.YAMLError as e:
        raise LoadFailed([Diagnostic(code="yaml-syntax", severity="error", message=f"YAML: {e}",
                                     file=source, line=1, col=1)]) from None
    if len(nodes) != 1:
        msg = "policy file is empty" if not nodes else "policy file holds several YAML documents; use one"
        raise LoadFailed([Diagnostic(code="yaml-documents", severity="error", message=msg,
                                     file=source, line=1, col=1)])
    builder = _Builder(loc, os.environ if env is None else env)
    loc.data = builder.build(nodes[0], ())
    if builder.errors:
        raise LoadFailed(builder.errors)
    return loc
