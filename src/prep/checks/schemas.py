"""The JSON Schemas (draft 2020-12) for each input format and for prep's canonical records.

The schema files ship inside the package (src/prep/schemas/) and are mirrored in the
repository's top-level schemas/ folder for users and editors. A row is first checked with
jsonschema-rs when it is installed (a compiled validator, ~100x faster; most rows are valid),
and only a row that fails is explained with python-jsonschema's `iter_errors`, whose errors
carry the failing keyword and subschema; `x-prep` in a subschema maps a keyword to a prep code.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from prep.core.findings import Finding, finding
from prep.core.records import type_name, unknown_role

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, ValidationError
    from referencing import Registry

BASE = "https://prep.invalid/schemas/"
FORMAT_SCHEMAS = ("openai", "lf_parts", "sharegpt", "alpaca", "trl", "autotrain", "coqa", "text")
NAMES = ("common", *FORMAT_SCHEMAS, "records", "recipe")  # recipe: `prep run` recipes (prep.recipe)

# The code a failing keyword gives when its subschema has no `x-prep` entry for it.
_DEFAULT_CODES = {"required": "missing_field", "dependentRequired": "missing_field", "type": "wrong_type",
                  "enum": "bad_value", "const": "bad_value", "minItems": "empty_value", "maxItems": "bad_value",
                  "minLength": "empty_content", "pattern": "empty_content", "additionalProperties": "unknown_key"}


@cache
def load(name: str) -> dict[str, Any]:
    """A shipped schema as a dict (e.g. `load("openai")`)."""
    if name not in NAMES:
        raise KeyError(f"no schema named {name!r}; one of {', '.join(NAMES)}")
    return json.loads(resources.files("prep").joinpath("schemas", f"{name}.json").read_text(encoding="utf-8"))


@cache
def _registry() -> Registry:
    from referencing import Registry, Resource  # noqa: PLC0415 - start-up time: only to explain a failing row

    return Registry().with_resources((BASE + f"{n}.json", Resource.from_contents(load(n))) for n in NAMES)


@cache
def _explainer(name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # noqa: PLC0415 - start-up time: only to explain a failing row

    return Draft202012Validator(load(name), registry=_registry())


@cache
def _fast(name: str) -> Any:
    """jsonschema-rs validator for the happy path, or None when the package is not installed."""
    try:
        import jsonschema_rs  # noqa: PLC0415 - optional: jsonschema-rs, the fast validator, when installed
    except ImportError:
        return None
    registry = jsonschema_rs.Registry([(BASE + f"{n}.json", load(n)) for n in NAMES])
    return jsonschema_rs.validator_for(load(name), registry=registry)


def is_valid(name: str, instance: Any) -> bool:
    fast = _fast(name)
    if fast is not None:
        try:
            return fast.is_valid(instance)
        except Exception:  # values JSON has no type for (Parquet bytes, dates): let jsonschema judge them
            pass
    return _explainer(name).is_valid(instance)


def check(name: str, instance: Any) -> list[Finding]:
    """Every structural finding for `instance` against schema `name` (empty when it is valid)."""
    if is_valid(name, instance):
        return []
    out: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    for error in _explainer(name).iter_errors(instance):
        for f in _findings(error):
            if (f.code, f.path) not in seen:
                seen.add((f.code, f.path))
                out.append(f)
    return out


def json_path(parts: Any) -> str:
    """`$.messages[2].role` from a sequence of keys and indices."""
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and p.isidentifier():
            out += f".{p}"
        else:
            out += f"[{json.dumps(p)}]"
    return out


def show(value: Any, limit: int = 60) -> str:
    """A user value quoted for a message: JSON, ASCII-escaped, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _findings(error: ValidationError) -> list[Finding]:
    keyword = str(error.validator)
    schema = error.schema if isinstance(error.schema, dict) else {}
    code = schema.get("x-prep", {}).get(keyword) or _DEFAULT_CODES.get(keyword, "bad_value")
    hint = schema.get("x-hint")
    parts = list(error.absolute_path)
    path = json_path(parts)
    value = error.instance
    if keyword == "required":
        return [finding(code, f"required field {key!r} is missing", json_path([*parts, key]), hint=hint or f"add {key!r}")
                for key in error.validator_value if isinstance(value, dict) and key not in value]
    if keyword == "dependentRequired":
        return [finding(code, f"{key!r} needs {dep!r} beside it", json_path([*parts, dep]), hint=hint or f"add {dep!r}")
                for key, deps in error.validator_value.items() if isinstance(value, dict) and key in value
                for dep in deps if dep not in value]
    if keyword == "additionalProperties":
        known = schema.get("properties", {})
        return [finding(code, f"unknown key {show(key)}", json_path([*parts, key]))
                for key in value if key not in known]
    if keyword == "type":
        want = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        names = " or ".join("an integer" if t == "integer" else type_name(  # not "a number, got a number" for 0.5
            {"object": {}, "array": [], "string": "", "boolean": True, "number": 0.0}[t]) for t in want if t != "null")
        if value is None:
            return [finding(code, f"{path} is null; expected {names}", path, hint=hint)]
        return [finding(code, f"expected {names}, got {type_name(value)}", path, hint=hint)]
    if keyword == "enum" and code == "bad_role":  # in the readers' words, so validate and dedup say the same
        message, role_hint = unknown_role(value, error.validator_value)
        return [finding(code, message, path, hint=role_hint)]
    if keyword == "enum":
        allowed = ", ".join(show(v) for v in error.validator_value)
        return [finding(code, f"{show(value)} is not one of {allowed}", path, hint=hint)]
    if keyword == "const":
        return [finding(code, f"expected {show(error.validator_value)}, got {show(value)}", path, hint=hint)]
    if keyword == "minItems":
        if error.validator_value == 1:
            return [finding(code, "the list is empty", path, hint=hint)]
        return [finding(code, f"has {len(value)} item(s); needs at least {error.validator_value}", path, hint=hint)]
    if keyword == "maxItems":
        return [finding(code, f"has {len(value)} items; at most {error.validator_value} allowed", path, hint=hint)]
    if keyword in ("minLength", "pattern"):
        return [finding(code, "the text is empty", path, hint=hint)]
    return [finding(code, schema.get("x-message", error.message), path, hint=hint)]
