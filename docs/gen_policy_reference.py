"""Render the policy schema into the "Schema reference" section of docs/policy.md.

Every property of `schemas/policy.schema.json` becomes one table row: its path (`providers.*.limits.rpm`,
`routes[].require.score`), type, default, constraints and description. The section lives between
`<!-- schema:start -->` and `<!-- schema:end -->`; everything else in the file is left alone.

Defaults come from the descriptions themselves, written as "Default: `30`." (a value) or
"Default: the model's key." (prose), so the schema stays the one source; `tests/test_docs.py`
checks the backticked ones against what the engine really builds.

Usage:
    python docs/gen_policy_reference.py            # rewrite the section in place
    python docs/gen_policy_reference.py --check    # exit 1 if the section is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "policy.schema.json"
DOC = ROOT / "docs" / "policy.md"
START = "<!-- schema:start -->"
END = "<!-- schema:end -->"

_DEFAULT = re.compile(r"\s*Default: ((?:`[^`]*`|[^.`])+)\.(?=\s|$)")
"""`Default: X.` inside a description; X runs to the sentence's end (dots inside backticks allowed)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One documented property.

    Attributes:
        path: dotted path, `*` for any key of a mapping, `[]` for any item of a list.
        type: rendered type.
        default: rendered default ("" when none is documented).
        constraints: rendered validation constraints.
        description: the description without its "Default: ..." sentence.
        required: whether the enclosing object requires the key.
    """

    path: str
    type: str
    default: str
    constraints: str
    description: str
    required: bool


def load_schema(path: Path = SCHEMA) -> dict[str, Any]:
    """The policy schema as data."""
    schema: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return schema


def _resolve(node: dict[str, Any], schema: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(the node with its `$ref` followed and its own keys on top, the def's name or None)."""
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node, None
    if not ref.startswith("#/$defs/"):
        raise ValueError(f"unsupported $ref {ref!r}")
    name = ref.removeprefix("#/$defs/")
    target = schema["$defs"][name]
    # keys beside a $ref (a description) apply on top of the referenced schema
    merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return merged, name


def split_default(description: str) -> tuple[str, str]:
    """(description without the default sentence, the default as written, or "")."""
    m = _DEFAULT.search(description)
    if m is None:
        return description.strip(), ""
    rest = (description[: m.start()] + description[m.end() :]).strip()
    return rest, m.group(1).strip()


def _code(value: Any) -> str:
    return "`" + (json.dumps(value) if not isinstance(value, str) else value) + "`"


def render_type(node: dict[str, Any], schema: dict[str, Any], ref: str | None = None) -> str:
    """A short human type: `integer`, `string or null`, `one of a, b`, `list of ...`, `map of ...`."""
    if ref == "expression":
        return "[expression](#expressions)"
    if "const" in node:
        return f"constant {_code(node['const'])}"
    if "enum" in node:
        return "one of " + ", ".join(_code(v) for v in node["enum"])
    t = node.get("type")
    if t == "array":
        items = node.get("items")
        if isinstance(items, dict):
            inner, iref = _resolve(items, schema)
            if iref is not None and iref != "expression":
                return f"list of {iref}"
            return f"list of {render_type(inner, schema, iref)}"
        return "list"
    if t == "object" or (t is None and ("properties" in node or "additionalProperties" in node)):
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and not node.get("properties"):
            inner, iref = _resolve(extra, schema)
            what = iref if iref is not None and iref != "expression" else render_type(inner, schema, iref)
            return f"map of name to {what}"
        return "mapping"
    if isinstance(t, list):
        return " or ".join(str(x) for x in t)
    if t is None:
        return "any"
    return str(t)


def render_constraints(node: dict[str, Any], schema: dict[str, Any]) -> str:
    """Validation keywords in words: `>= 1`, `<= 500 chars`, `keys match ...`, `unique`."""
    out: list[str] = []
    for key, word in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in node:
            out.append(f"{word} {node[key]}")
    if "minLength" in node and node["minLength"] > 1:
        out.append(f"at least {node['minLength']} chars")
    if "maxLength" in node:
        out.append(f"at most {node['maxLength']} chars")
    if "pattern" in node:
        out.append(f"matches `{node['pattern']}`")
    if "minItems" in node:
        out.append(f"at least {node['minItems']} item(s)")
    if "minProperties" in node:
        out.append(f"at least {node['minProperties']} key(s)")
    if node.get("uniqueItems"):
        out.append("no duplicates")
    names = node.get("propertyNames")
    if isinstance(names, dict) and "pattern" in names:
        out.append(f"names match `{names['pattern']}`")
    out += _member_constraints(node, schema)
    return "; ".join(out)


def _member_constraints(node: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Constraints on the items of a list or the values of a map that get no row of their own."""
    out = []
    extra = node.get("additionalProperties") if not node.get("properties") else None
    for label, member in (("each item", node.get("items")), ("each value", extra)):
        if isinstance(member, dict):
            inner, ref = _resolve(member, schema)
            sub = render_constraints(inner, schema) if ref is None else ""
            if sub:
                out.append(f"{label}: {sub}")
    return out


def _children(node: dict[str, Any], schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(path suffix, child schema, required) for every documented child of `node`."""
    required = set(node.get("required", ()))
    for key, child in (node.get("properties") or {}).items():
        if isinstance(child, dict):
            yield f".{key}", child, key in required
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield ".*", extra, False
    items = node.get("items")
    if isinstance(items, dict):
        yield "[]", items, False


def rows(schema: dict[str, Any]) -> list[Row]:
    """Every property path of the schema, depth first, in schema order."""
    out: list[Row] = []

    def walk(node: dict[str, Any], path: str, required: bool, listed: bool) -> None:
        resolved, ref = _resolve(node, schema)
        if listed:
            desc, default = split_default(str(resolved.get("description", "")))
            out.append(
                Row(
                    path=path,
                    type=render_type(resolved, schema, ref),
                    default=default,
                    constraints=render_constraints(resolved, schema),
                    description=desc,
                    required=required,
                )
            )
        for suffix, child, req in _children(resolved, schema):
            child_resolved, _ = _resolve(child, schema)
            # a list of or a map of plain values is fully described by its parent's row
            plain = suffix in (".*", "[]") and not (
                child_resolved.get("properties") or isinstance(child_resolved.get("additionalProperties"), dict)
            )
            walk(child, (path + suffix).lstrip("."), req, not plain)

    walk(schema, "", False, False)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(schema: dict[str, Any]) -> str:
    """The generated markdown: one table per top-level key, in schema order."""
    lines = [
        START,
        "<!-- Generated by docs/gen_policy_reference.py from schemas/policy.schema.json; do not edit by hand. -->",
        "",
    ]
    groups: dict[str, list[Row]] = {}
    for r in rows(schema):
        groups.setdefault(re.split(r"[.\[]", r.path, maxsplit=1)[0], []).append(r)
    for top, group in groups.items():
        lines += [f"#### `{top}`", "", "| Path | Type | Default | Constraints | Description |", "|---|---|---|---|---|"]
        for r in group:
            typ = r.type + (" (required)" if r.required else "")
            lines.append(
                f"| `{r.path}` | {_cell(typ)} | {_cell(r.default)} | {_cell(r.constraints)} | {_cell(r.description)} |"
            )
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def replace_section(text: str, generated: str) -> str:
    """`text` with the marked section replaced by `generated` (which carries the markers)."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"markers {START} ... {END} not found in {DOC}")
    return text[:start] + generated + text[end + len(END) :]


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite or check the generated section; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/policy.md is stale")
    parser.add_argument("--schema", type=Path, default=SCHEMA)
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    text = args.doc.read_text("utf-8")
    new = replace_section(text, render(load_schema(args.schema)))
    if args.check:
        if new != text:
            print(f"{args.doc} is stale: run python docs/gen_policy_reference.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.doc.write_text(new, "utf-8")
        print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
