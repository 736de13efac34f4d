"""Validate policy data against `schemas/policy.schema.json` (JSON Schema 2020-12).

Every violation becomes a positioned diagnostic; jsonschema's own messages repeat the whole
offending value, so we word the common cases ourselves and keep the rest short.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from engine.policy.bundled import schemas_dir
from engine.policy.diagnostics import Diagnostic, did_you_mean
from engine.policy.load import Located, PathT


def schema_path() -> Path:
    """Where the bundled schema lives (inside the installed package or the source tree)."""
    return schemas_dir() / "policy.schema.json"


@functools.lru_cache(maxsize=1)
def policy_schema() -> dict[str, Any]:
    """The policy JSON Schema, loaded once."""
    text = schema_path().read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(policy_schema())


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _leaf_errors(err: ValidationError) -> list[ValidationError]:
    """For anyOf/oneOf, the most relevant branch's errors instead of 'is not valid under any'."""
    if err.context:
        best = jsonschema.exceptions.best_match(err.context)
        return _leaf_errors(best) if best is not None else [err]
    return [err]


def _message(err: ValidationError, loc: Located) -> tuple[str, PathT, bool]:
    """(message, path, point at key) for one error."""
    path: PathT = tuple(err.absolute_path)
    v, inst = err.validator, err.instance
    if v == "required":
        missing = [k for k in err.validator_value if isinstance(inst, dict) and k not in inst]
        return f"missing required key {missing[0]!r}" if missing else err.message, path, False
    if v == "type":
        want = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
        return f"expected {want}, got {_short(inst)}", path, False
    if v == "enum":
        allowed = ", ".join(map(str, err.validator_value))
        hint = did_you_mean(str(inst), [str(x) for x in err.validator_value]) if isinstance(inst, str) else ""
        return f"{_short(inst)} is not one of: {allowed}{hint}", path, False
    if v == "const":
        return f"expected {_short(err.validator_value)}, got {_short(inst)}", path, False
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        rel = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[str(v)]
        return f"{_short(inst)} must be {rel} {err.validator_value}", path, False
    if v == "minItems":
        return f"needs at least {err.validator_value} item(s)", path, False
    if v == "minProperties":
        return f"needs at least {err.validator_value} key(s)", path, False
    if v in ("minLength", "maxLength"):
        return (f"string length must be {'>=' if v == 'minLength' else '<='} {err.validator_value}"
                f" (got {len(inst)})"), path, False
    if v == "uniqueItems":
        return "items must be unique", path, False
    if v == "pattern":
        return f"{_short(inst)} does not match {err.validator_value}", path, False
    if err.validator is False or (v is None and err.schema is False) or "False schema" in err.message:
        key = path[-1] if path else "?"
        return f"{key!r} is not allowed here", path, True
    return err.message if len(err.message) < 200 else err.message[:197] + "...", path, False


def validate_schema(loc: Located) -> list[Diagnostic]:
    """All schema violations of `loc.data`, positioned, sorted, one per problem."""
    out: list[Diagnostic] = []
    for top in _validator().iter_errors(loc.data):
        for err in _leaf_errors(top):
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                out.extend(_unknown_keys(err, loc))
                continue
            if err.validator == "propertyNames":
                # error.instance is the offending key itself; path is the mapping
                key = err.instance
                path = (*tuple(err.absolute_path), key) if isinstance(key, str) else tuple(err.absolute_path)
                out.append(loc.diag("schema", f"invalid name {_short(key)}: use letters, digits, '_', '-', '.'",
                                    path, key=True))
                continue
            msg, path, key = _message(err, loc)
            out.append(loc.diag("schema", msg, path, key=key))
    return out


def _unknown_keys(err: ValidationError, loc: Located) -> list[Diagnostic]:
    props = list((err.schema or {}).get("properties", {})) if isinstance(err.schema, dict) else []
    path: PathT = tuple(err.absolute_path)
    out = []
    for key in err.instance:
        if key in props:
            continue
        hint = did_you_mean(key, props)
        allowed = "" if hint else f"; allowed: {', '.join(props)}" if props else ""
        out.append(loc.diag("schema-unknown-key", f"unknown key {key!r}{hint}{allowed}", (*path, key), key=True))
    return out


def error_locations(data: Any) -> list[tuple[PathT, str]]:
    """(instance path, failing keyword) of every schema error, for best-effort repair."""
    out: list[tuple[PathT, str]] = []
    for top in _validator().iter_errors(data):
        for err in _leaf_errors(top):
            path: PathT = tuple(err.absolute_path)
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                props = err.schema.get("properties", {}) if isinstance(err.schema, dict) else {}
                out.extend(((*path, k), "additionalProperties") for k in err.instance if k not in props)
            else:
                out.append((path, str(err.validator)))
    return out
