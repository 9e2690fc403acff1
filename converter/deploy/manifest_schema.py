"""Validates an Android export manifest against `android_manifest.schema.json`.

The schema is standard JSON Schema (draft 2020-12), so an app or CI job can
check a manifest with any validator. The project checks it with this small
validator instead of the `jsonschema` package, which would add five pinned
packages (one of them compiled) for a single document. To keep the two from
drifting apart, this validator implements the keywords the schema uses and
refuses a schema with any other keyword: nothing in the schema goes unchecked.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Mapping
from typing import Any

SCHEMA_PATH = pathlib.Path(__file__).with_name("android_manifest.schema.json")

# Keywords that carry no constraint.
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}
_CHECKED = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "pattern",
    "minimum",
    "minItems",
    "minLength",
    "oneOf",
    "$ref",
    "propertyNames",
}
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


class ManifestError(ValueError):
    """A manifest does not match the schema; the message names the JSON path."""


def load_schema() -> dict[str, Any]:
    """The manifest schema shipped beside this module."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_manifest(manifest: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> None:
    """Checks a manifest against the schema.

    Args:
      manifest: the parsed manifest.
      schema: defaults to `load_schema()`.

    Raises:
      ManifestError: the first mismatch, with its JSON path.
      ValueError: the schema uses a keyword this validator does not check.
    """
    schema = load_schema() if schema is None else schema
    _validate(manifest, schema, "$", schema)


def _resolve(reference: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not reference.startswith("#/"):
        raise ValueError(f"Only local references are supported, got {reference!r}.")
    node: Any = root
    for part in reference[2:].split("/"):
        node = node[part]
    return node


def _validate(value: Any, schema: Mapping[str, Any], path: str, root: Mapping[str, Any]) -> None:
    unknown = set(schema) - _CHECKED - _ANNOTATIONS
    if unknown:
        raise ValueError(f"Schema keyword(s) {sorted(unknown)} at {path} are not implemented by manifest_schema.")
    if "$ref" in schema:
        _validate(value, _resolve(schema["$ref"], root), path, root)
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[name](value) for name in allowed):
            raise ManifestError(f"{path}: expected {' or '.join(allowed)}, got {json.dumps(value)[:80]}.")
    if "const" in schema and (value != schema["const"] or type(value) is not type(schema["const"])):
        raise ManifestError(f"{path}: expected {schema['const']!r}, got {value!r}.")
    if "enum" in schema and value not in schema["enum"]:
        raise ManifestError(f"{path}: {value!r} is not one of {schema['enum']}.")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise ManifestError(f"{path}: string shorter than {schema['minLength']}.")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise ManifestError(f"{path}: {value!r} does not match {schema['pattern']}.")
    if _TYPES["number"](value) and "minimum" in schema and value < schema["minimum"]:
        raise ManifestError(f"{path}: {value} is below the minimum {schema['minimum']}.")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise ManifestError(f"{path}: fewer than {schema['minItems']} items.")
        if "items" in schema:
            for index, item in enumerate(value):
                _validate(item, schema["items"], f"{path}[{index}]", root)
    if isinstance(value, dict):
        _validate_object(value, schema, path, root)
    if "oneOf" in schema:
        errors, matches = [], 0
        for option in schema["oneOf"]:
            try:
                _validate(value, option, path, root)
                matches += 1
            except ManifestError as error:
                errors.append(str(error))
        if matches != 1:
            raise ManifestError(
                f"{path}: matches {matches} of the allowed forms, not exactly one ({'; '.join(errors)})."
            )


def _validate_object(value: dict, schema: Mapping[str, Any], path: str, root: Mapping[str, Any]) -> None:
    for key in schema.get("required", []):
        if key not in value:
            raise ManifestError(f"{path}: missing required key {key!r}.")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if "propertyNames" in schema:
            _validate(key, schema["propertyNames"], f"{path} key {key!r}", root)
        if key in properties:
            _validate(item, properties[key], f"{path}.{key}", root)
        elif extra is False:
            raise ManifestError(f"{path}: unexpected key {key!r}.")
        elif isinstance(extra, dict):
            _validate(item, extra, f"{path}.{key}", root)
