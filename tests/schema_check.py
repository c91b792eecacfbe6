"""The subset of JSON Schema that docs/status-schema.json uses: type, enum, required, properties, items, $ref.

Small on purpose: the schema is the document, this only holds the daemon's output to it.
Unknown properties are errors too, so the document cannot fall behind the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "docs" / "status-schema.json").read_text())
_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict,
          "array": list, "null": type(None)}


def errors(value: Any, schema: dict[str, Any] = SCHEMA, where: str = "$") -> list[str]:
    if "$ref" in schema:
        schema = SCHEMA["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    found: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} not in {schema['enum']}"]
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool))
                 for t in types)
        if not ok:
            return [f"{where}: {type(value).__name__} is not {'/'.join(types)}"]
    if isinstance(value, dict) and "properties" in schema:
        found += [f"{where}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        found += [f"{where}: undocumented {k!r}" for k in value if k not in schema["properties"]]
        for key, sub in schema["properties"].items():
            if key in value:
                found += errors(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += errors(item, schema["items"], f"{where}[{i}]")
    return found
