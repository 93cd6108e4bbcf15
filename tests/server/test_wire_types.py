"""The front end's TypeScript types agree with the OpenAPI document, field by field.

``labextension/src/views/types.ts`` declares what the views read from the REST API.
Each interface below is compared with its schema in the served document: a field the
server sends that the front end does not declare, a field the front end expects that
the server does not send, or a field the server may leave out or send as null that
the front end counts on, fails this test (and CI with it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.contract import document

TYPES_TS = Path(__file__).resolve().parents[2] / "labextension" / "src" / "views" / "types.ts"

# TypeScript interface -> OpenAPI schema; "subset": the front end reads only some fields
PAIRS = {
    "Coins": ("Coins", "full"),
    "UserInfo": ("User", "full"),
    "Tiles": ("Tiles", "full"),
    "PoolInfo": ("Pool", "full"),
    "Counters": ("Counters", "full"),
    "WebChat": ("WebChat", "full"),
    "Profile": ("Profile", "full"),
    "ApiKey": ("Key", "full"),
    "KeyList": ("KeyList", "full"),
    "CreatedKey": ("CreatedKey", "subset"),
    "ModelInfo": ("Model", "full"),
    "ModelList": ("ModelList", "full"),
    "UsageValues": ("UsageValues", "full"),
    "UsageBucket": ("UsageBucket", "full"),
    "UsageHistory": ("UsageHistory", "full"),
}

_INTERFACE = re.compile(r"^export interface (\w+)(?: extends (\w+))? \{$")
_FIELD = re.compile(r"^  (\w+)(\?)?: (.+);$")


def parse_interfaces(text: str) -> dict[str, dict[str, tuple[bool, bool]]]:
    """``{interface: {field: (optional, nullable)}}``, with ``extends`` resolved."""
    found: dict[str, dict[str, tuple[bool, bool]]] = {}
    bases: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if current is None:
            match = _INTERFACE.match(line)
            if match:
                current = match.group(1)
                found[current] = {}
                if match.group(2):
                    bases[current] = match.group(2)
            continue
        if line.startswith("}"):
            current = None
            continue
        field = _FIELD.match(line)
        if field:
            name, optional, type_text = field.groups()
            nullable = re.search(r"(^|\|)\s*null\s*($|\|)", type_text) is not None
            found[current][name] = (bool(optional), nullable)
    for name, base in bases.items():
        found[name] = {**found[base], **found[name]}
    return found


def schema_fields(name: str) -> dict[str, tuple[bool, bool]]:
    schema = document()["components"]["schemas"][name]
    required = set(schema.get("required", []))
    fields = {}
    for field, prop in schema["properties"].items():
        types = prop.get("type")
        nullable = (
            (isinstance(types, list) and "null" in types)
            or None in prop.get("enum", [])
            or any(part.get("type") == "null" for part in prop.get("anyOf", []))
        )
        fields[field] = (field not in required, nullable)
    return fields


def differences(ts: dict[str, tuple[bool, bool]], api: dict[str, Any], mode: str) -> list[str]:
    problems = []
    for field in sorted(set(api) - set(ts)):
        if mode == "full":
            problems.append(f"{field}: sent by the server, missing in types.ts")
    for field in sorted(set(ts) - set(api)):
        problems.append(f"{field}: declared in types.ts, not in the OpenAPI document")
    # The front end may be more careful than needed (``?`` or ``| null`` on a field that
    # is always sent); it must not count on a field the server may leave out or null.
    for field in sorted(set(ts) & set(api)):
        (ts_optional, ts_null), (api_optional, api_null) = ts[field], api[field]
        if api_optional and not ts_optional:
            problems.append(f"{field}: the server may leave it out; types.ts needs `?`")
        if api_null and not ts_null:
            problems.append(f"{field}: the server may send null; types.ts needs `| null`")
    return problems


@pytest.mark.parametrize("interface", sorted(PAIRS))
def test_types_ts_matches_the_openapi_document(interface: str) -> None:
    interfaces = parse_interfaces(TYPES_TS.read_text(encoding="utf-8"))
    assert interface in interfaces, f"types.ts has no interface {interface}"
    schema, mode = PAIRS[interface]
    problems = differences(interfaces[interface], schema_fields(schema), mode)
    assert not problems, f"{interface} vs {schema}:\n  " + "\n  ".join(problems)


def test_every_response_schema_has_a_front_end_type_or_is_known_not_to() -> None:
    """A new payload type must be paired with its TypeScript interface here (or listed
    as one the front end does not read)."""
    not_read = {"Error", "ErrorBody", "KeyRevoked", "Instances"}
    requests = {"NewKey", "SaveKey", "ConsentBody"}
    paired = {schema for schema, _ in PAIRS.values()}
    unpaired = set(document()["components"]["schemas"]) - paired - not_read - requests
    assert not unpaired, f"schemas without a TypeScript interface: {sorted(unpaired)}"


def test_the_check_sees_a_missing_field() -> None:
    """The comparison itself: a field dropped from either side is reported."""
    ts = parse_interfaces("export interface Coins {\n  micro: number;\n}\n")["Coins"]
    assert differences(ts, schema_fields("Coins"), "full") == [
        "text: sent by the server, missing in types.ts"
    ]
    extra = parse_interfaces(
        "export interface Coins {\n  micro: number;\n  text: string;\n  cents?: number | null;\n}\n"
    )["Coins"]
    assert differences(extra, schema_fields("Coins"), "full") == [
        "cents: declared in types.ts, not in the OpenAPI document"
    ]
    pool = parse_interfaces(
        "export interface P {\n  state: string;\n  source: string;\n  balance: Coins;\n}\n"
    )["P"]
    assert differences(pool, schema_fields("Pool"), "subset") == [
        "balance: the server may leave it out; types.ts needs `?`",
        "source: the server may send null; types.ts needs `| null`",
    ]
