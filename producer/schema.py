"""The JSON Schema of the wire contract, generated from the msgspec types.

The generated files are committed under ``producer/schema/`` so producers in other
languages can validate a request before sending it; a test keeps them equal to the types.
"""

from __future__ import annotations

import inspect
import json
from importlib import resources
from pathlib import Path
from typing import Any

from .contract import (
    CONTRACT_VERSION,
    TRAILING_TYPES,
    Action,
    Event,
    OrderType,
    Request,
    Result,
    json_schema,
)
from .validation import (
    AMEND_REFUSED,
    AMENDABLE,
    DISPLAY_TYPES,
    PRICE_FIELDS,
    TRAILING_FIELDS,
)

SCHEMAS: dict[str, type] = {"request": Request, "result": Result, "event": Event}
_DIR = Path(__file__).parent / "schema"


def _is(field: str, value: str) -> dict[str, Any]:
    return {"properties": {field: {"const": value}}, "required": [field]}


def request_rules() -> list[dict[str, Any]]:
    """The per-action and per-type rules of ``validation.check_request`` as JSON Schema
    conditionals, generated from the same table so the two cannot drift apart."""
    place = {"anyOf": [{"not": {"required": ["action"]}}, _is("action", Action.PLACE)]}
    rules: list[dict[str, Any]] = [
        {"if": place, "then": {"required": ["symbol", "side", "type", "quantity"]}},
        {"if": _is("action", Action.CANCEL), "then": {"required": ["client_order_id"]}},
        {"if": _is("action", Action.AMEND), "then": {
            "required": ["client_order_id"],
            "anyOf": [{"required": [name]} for name in AMENDABLE],
            "not": {"anyOf": [{"required": [name]} for name in AMEND_REFUSED]}}},
        {"if": _is("time_in_force", "gtd"), "then": {"required": ["expire_at"]}},
        {"if": {"required": ["stop_limit_price"]}, "then": _is("type", OrderType.OCO)},
        {"if": {"required": ["limit_offset"]},
         "then": _is("type", OrderType.TRAILING_STOP_LIMIT)},
        {"if": _is("type", OrderType.TRAILING_STOP_LIMIT),
         "then": {"required": ["trailing_offset", "limit_offset"]}},
        {"if": _is("type", OrderType.TRAILING_STOP), "then": {"required": ["trailing_offset"]}},
    ]
    trailing = {"properties": {"type": {"enum": sorted(TRAILING_TYPES)}}, "required": ["type"]}
    rules += [{"if": {"required": [name]}, "then": trailing} for name in TRAILING_FIELDS]
    rules.append({"if": {"required": ["display_quantity"]}, "then": {
        "properties": {"type": {"enum": sorted(DISPLAY_TYPES)}}, "required": ["type"],
        "not": {"required": ["quote_quantity"]}}})
    for order_type, (needs_price, needs_stop) in PRICE_FIELDS.items():
        needed = [f for f, n in (("price", needs_price), ("stop_price", needs_stop)) if n]
        refused = [f for f, n in (("price", needs_price), ("stop_price", needs_stop)) if not n]
        then: dict[str, Any] = {}
        if needed:
            then["required"] = needed
        if refused:
            then["not"] = {"anyOf": [{"required": [f]} for f in refused]}
        rules.append({"if": _is("type", order_type), "then": then})
    return rules


def clean_descriptions(node: Any) -> Any:
    """``node`` with every ``description`` dedented as ``inspect.cleandoc`` does. msgspec
    copies docstrings into the schema, and its releases differ on whether they dedent them
    (0.23 does, earlier ones kept the source indentation); the committed files must not
    depend on which one is installed."""
    if isinstance(node, dict):
        return {key: inspect.cleandoc(value) if key == "description" and isinstance(value, str)
                else clean_descriptions(value) for key, value in node.items()}
    if isinstance(node, list):
        return [clean_descriptions(item) for item in node]
    return node


def generate(name: str) -> dict[str, Any]:
    schema = clean_descriptions(json_schema(SCHEMAS[name]))
    out: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://orderstream/schema/v{CONTRACT_VERSION}/{name}.json",
        "title": f"orderstream {name} v{CONTRACT_VERSION}",
        **schema,
    }
    if name == "request":
        out["allOf"] = request_rules()
    return out


def render(name: str) -> str:
    return json.dumps(generate(name), indent=2, sort_keys=True) + "\n"


def committed(name: str) -> str:
    return (resources.files("producer") / "schema" / f"{name}.schema.json").read_text()


def write_all(directory: Path = _DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SCHEMAS:
        path = directory / f"{name}.schema.json"
        path.write_text(render(name))
        paths.append(path)
    return paths
