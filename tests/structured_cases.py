"""Bounded structured-output constraints shared by the engine and end-to-end tests.

Every case is bounded (strings with maxLength, enums or patterns; bounded arrays; integer and number
ranges; bounded regexes and grammars), so even the demo model's random weights must finish each with
`stop` well within max_tokens, and every output must parse and validate.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

SCHEMAS: dict[str, dict[str, Any]] = {
    "user_info": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.com$"},
        },
        "required": ["name", "age"],
    },
    "nested_address": {
        "type": "object",
        "properties": {
            "person": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 10},
                    "address": {
                        "type": "object",
                        "properties": {
                            "street": {"type": "string", "maxLength": 16},
                            "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                        },
                        "required": ["street", "zip"],
                    },
                },
                "required": ["name", "address"],
            },
        },
        "required": ["person"],
    },
    "tags": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "enum": ["red", "green", "blue"]},
                     "minItems": 1, "maxItems": 3},
        },
        "required": ["tags"],
    },
    "enums": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "shade": {"type": "string", "enum": ["light", "dark"]},
            "size": {"enum": [1, 2, 3]},
        },
        "required": ["color", "shade", "size"],
    },
    "ranges": {
        "type": "object",
        "properties": {
            "count": {"type": "integer", "minimum": 1, "maximum": 9},
            "offset": {"type": "integer", "minimum": -50, "maximum": 50},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["count", "offset", "ratio"],
    },
    "items_of_objects": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 99}, "ok": {"type": "boolean"}},
                    "required": ["id", "ok"],
                },
                "minItems": 1,
                "maxItems": 2,
            },
        },
        "required": ["items"],
    },
    "optional_properties": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 10},
            "subtitle": {"type": "string", "maxLength": 10},
            "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
            "draft": {"type": "boolean"},
        },
        "required": ["title"],
    },
    "patterns": {
        "type": "object",
        "properties": {
            "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
            "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        },
        "required": ["date", "code"],
    },
    "matrix": {
        "type": "object",
        "properties": {
            "rows": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
                          "minItems": 1, "maxItems": 3},
                "minItems": 1,
                "maxItems": 2,
            },
        },
        "required": ["rows"],
    },
    "refs": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "integer", "minimum": -9, "maximum": 9},
                               "y": {"type": "integer", "minimum": -9, "maximum": 9}},
                "required": ["x", "y"],
            },
        },
        "type": "object",
        "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"],
    },
    "any_of": {
        "type": "object",
        "properties": {
            "value": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9},
                                {"type": "string", "enum": ["none", "many"]}]},
            "unit": {"type": ["string", "null"], "maxLength": 4},
        },
        "required": ["value", "unit"],
    },
    "strict_openai": {  # the shape OpenAI's strict mode asks for: all required, no extra properties
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "temperature_c": {"type": "integer", "minimum": -40, "maximum": 50},
            "conditions": {"type": "string", "enum": ["sunny", "cloudy", "rain", "snow"]},
        },
        "required": ["city", "temperature_c", "conditions"],
        "additionalProperties": False,
    },
}

PHONE_REGEX = r"\d{3}-\d{3}-\d{4}"  # the SGLang docs' example

# A small arithmetic grammar: at most two operators, numbers of one to three digits.
EBNF_GRAMMAR = """
root ::= expr
expr ::= term (op term)?  (op term)?
term ::= number | "(" number op number ")"
op ::= " + " | " - " | " * "
number ::= [1-9] [0-9]? [0-9]? | "0"
"""
EBNF_PATTERN = re.compile(r"^(\d+|\(\d+ [-+*] \d+\))( [-+*] (\d+|\(\d+ [-+*] \d+\))){0,2}$")


def check_json(text: str, schema: dict[str, Any]) -> Any:
    """Parses ``text`` and validates it against ``schema``; raises on either failure."""
    value = json.loads(text)
    jsonschema.validate(value, schema)
    return value


def check_regex(text: str, pattern: str) -> None:
    assert re.fullmatch(pattern, text), f"{text!r} does not match {pattern!r}"
