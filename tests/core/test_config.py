"""Reading a Lumen-style YAML file into a Catalog; every mistake names its entry and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lumen_jupyter.core.catalog import Catalog, PoolSpec, Rule
from lumen_jupyter.core.config import load_config_file, parse_config
from lumen_jupyter.core.defaults import embedded_default
from lumen_jupyter.core.errors import ConfigError
from lumen_jupyter.core.money import MICRO

UPSTREAM_KEY = "sk-upstream-DO-NOT-LEAK-9f8e7d6c5b4a"

LUMEN_YAML = f"""
version: 2
app:            # Lumen's own sections are ignored
  secret_key: whatever
oauth2:
  client_id: x
api:
  consent: true
defaults:
  tokens: {{max: 20, refresh: 1.5, starting: 10}}
  models: blocked
models:
  - name: gpt-4o
    input_cost_per_million: 2.5
    output_cost_per_million: 10
    endpoints:
      - url: https://api.example.com/v1/
        api_key: {UPSTREAM_KEY}
        model: gpt-4o-2024-08-06
      - url: http://10.0.0.2:8000/v1
    description: Big model
    max_model_len: 128000
    max_output_tokens: 16384
    supports_function_calling: true
    input_modalities: [text, image]
  - name: llama
    input_cost_per_million: 0.1
    output_cost_per_million: 0.2
    access: allowed
    endpoints:
      - url: http://gpu:8000/v1
  - name: restricted
    access: needs_ack
    notice: Do not send personal data.
  - name: retired
    active: false
groups:
  staff:
    tokens: {{max: -2}}
    models:
      default: allowed
      restricted: blocked
    members: [ada, bob]
  students:
    tokens: {{max: 5, refresh: 0.25}}
    models: allowed
  frozen:
    tokens: {{max: 0}}
    active: false
users:
  ada:
    tokens: {{max: 100, refresh: 10, starting: 50}}
    models:
      gpt-4o: blocked
    groups: [students]
    email: ada@example.org
    display_name: Ada Lovelace
  eve:
    models: blocked
"""


@pytest.fixture
def parsed() -> Catalog:
    return parse_config(yaml.safe_load(LUMEN_YAML))


def test_models(parsed: Catalog) -> None:
    assert list(parsed.models) == ["gpt-4o", "llama", "restricted", "retired"]
    gpt = parsed.models["gpt-4o"]
    assert (gpt.input_price_micro, gpt.output_price_micro) == (2_500_000, 10 * MICRO)
    assert [e.url for e in gpt.endpoints] == [
        "https://api.example.com/v1",
        "http://10.0.0.2:8000/v1",
    ]
    assert [e.model for e in gpt.endpoints] == ["gpt-4o-2024-08-06", "gpt-4o"]
    assert gpt.endpoints[0].api_key.reveal() == UPSTREAM_KEY
    assert not gpt.endpoints[1].api_key
    assert (gpt.description, gpt.max_model_len, gpt.max_output_tokens) == (
        "Big model",
        128000,
        16384,
    )
    assert gpt.supports_function_calling is True
    assert gpt.supports_reasoning is None
    assert gpt.input_modalities == ("text", "image")
    assert gpt.access is None and gpt.active and not gpt.needs_consent

    llama = parsed.models["llama"]
    assert (llama.input_price_micro, llama.output_price_micro) == (100_000, 200_000)
    assert llama.access is Rule.ALLOWED

    restricted = parsed.models["restricted"]
    assert restricted.access is Rule.ALLOWED
    assert restricted.needs_consent is True
    assert restricted.notice == "Do not send personal data."
    assert parsed.models["retired"].active is False


def test_defaults_groups_and_users(parsed: Catalog) -> None:
    assert parsed.default_pool == PoolSpec(20 * MICRO, 1_500_000, 10 * MICRO)
    assert parsed.default_rule is Rule.BLOCKED
    assert parsed.require_consent is True

    staff = parsed.groups["staff"]
    assert staff.pool == PoolSpec(None, 0, 0)
    assert staff.pool.unlimited
    assert staff.default_rule is Rule.ALLOWED
    assert staff.rules == {"restricted": Rule.BLOCKED}
    assert staff.members == frozenset({"ada", "bob"})
    students = parsed.groups["students"]
    assert students.pool == PoolSpec(5 * MICRO, 250_000, 5 * MICRO)  # starting defaults to max
    assert (students.default_rule, students.rules) == (Rule.ALLOWED, {})
    frozen = parsed.groups["frozen"]
    assert frozen.pool is not None and frozen.pool.blocked and not frozen.active

    ada = parsed.users["ada"]
    assert ada.pool == PoolSpec(100 * MICRO, 10 * MICRO, 50 * MICRO)
    assert ada.rules == {"gpt-4o": Rule.BLOCKED}
    assert ada.groups == frozenset({"students"})
    assert (ada.email, ada.display_name) == ("ada@example.org", "Ada Lovelace")
    assert parsed.users["eve"].default_rule is Rule.BLOCKED
    assert [g.name for g in parsed.groups_of("ada")] == ["staff", "students"]
    assert [g.name for g in parsed.groups_of("bob", frozenset({"frozen"}))] == ["staff"]


def test_upstream_api_key_never_shows(parsed: Catalog) -> None:
    for text in (repr(parsed), str(parsed), repr(parsed.models["gpt-4o"])):
        assert UPSTREAM_KEY not in text
    assert "********" in repr(parsed.models["gpt-4o"].endpoints[0])


def test_load_config_file(tmp_path: Path) -> None:
    path = tmp_path / "lumen.yaml"
    path.write_text(LUMEN_YAML, encoding="utf-8")
    assert load_config_file(path) == parse_config(yaml.safe_load(LUMEN_YAML))
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    base = embedded_default("http://127.0.0.1:1234")
    assert load_config_file(empty, base=base) == base


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(bad)


def test_a_partial_file_keeps_the_base() -> None:
    base = embedded_default("http://127.0.0.1:1234")
    merged = parse_config({"defaults": {"tokens": {"max": 5}}}, base=base)
    assert merged.models == base.models
    assert merged.default_rule is base.default_rule
    assert merged.default_pool == PoolSpec(5 * MICRO, 0, 5 * MICRO)


def model_entry(**fields: Any) -> dict[str, Any]:
    return {"name": "x", **fields}


BAD = [
    # (id, document, fragments the message must contain)
    (
        "price-not-a-number",
        {"models": [{"name": "ok"}, model_entry(input_cost_per_million="cheap")]},
        ["models[1] 'x': input_cost_per_million", "'cheap'"],
    ),
    (
        "negative-price",
        {"models": [model_entry(output_cost_per_million=-1)]},
        ["models[0] 'x': output_cost_per_million", ">= 0"],
    ),
    (
        "bool-price",
        {"models": [model_entry(input_cost_per_million=True)]},
        ["models[0] 'x': input_cost_per_million"],
    ),
    ("missing-name", {"models": [{"input_cost_per_million": 1}]}, ["models[0]", "name"]),
    ("models-not-a-list", {"models": {"x": {}}}, ["models must be a list"]),
    ("duplicate-name", {"models": [model_entry(), model_entry()]}, ["models[1] 'x'", "twice"]),
    (
        "bad-endpoint-url",
        {"models": [model_entry(endpoints=[{"url": "ftp://h"}])]},
        ["models[0] 'x': endpoints[0]", "url"],
    ),
    (
        "bad-endpoint-key",
        {"models": [model_entry(endpoints=[{"url": "http://h", "api_key": 5}])]},
        ["models[0] 'x': endpoints[0]", "api_key"],
    ),
    ("bad-access", {"models": [model_entry(access="maybe")]}, ["models[0] 'x': access", "'maybe'"]),
    ("bad-active", {"models": [model_entry(active="yes")]}, ["models[0] 'x': active"]),
    ("bad-max-len", {"models": [model_entry(max_model_len=-5)]}, ["models[0] 'x': max_model_len"]),
    (
        "bad-modalities",
        {"models": [model_entry(input_modalities="text")]},
        ["models[0] 'x': input_modalities"],
    ),
    ("pool-without-max", {"defaults": {"tokens": {"refresh": 1}}}, ["defaults.tokens", "max"]),
    ("pool-max-negative", {"groups": {"g": {"tokens": {"max": -1}}}}, ["groups.g.tokens.max"]),
    (
        "pool-unknown-field",
        {"users": {"u": {"tokens": {"max": 1, "refil": 2}}}},
        ["users.u.tokens", "'refil'"],
    ),
    (
        "pool-bad-refresh",
        {"groups": {"g": {"tokens": {"max": 1, "refresh": "lots"}}}},
        ["groups.g.tokens.refresh"],
    ),
    ("bad-default-rule", {"defaults": {"models": "sometimes"}}, ["defaults.models"]),
    ("bad-group-rule", {"groups": {"g": {"models": {"gpt": "nope"}}}}, ["groups.g.models.gpt"]),
    ("bad-members", {"groups": {"g": {"members": "ada"}}}, ["groups.g.members"]),
    ("bad-user-groups", {"users": {"u": {"groups": [1]}}}, ["users.u.groups"]),
    ("group-not-a-mapping", {"groups": {"g": [1]}}, ["groups.g must be a mapping"]),
    ("bad-consent-flag", {"api": {"consent": "no"}}, ["api.consent"]),
    ("bad-version", {"version": 7}, ["version"]),
    ("top-level-list", [1, 2], ["top level must be a mapping"]),
]


@pytest.mark.parametrize(("document", "fragments"), [pytest.param(*c[1:], id=c[0]) for c in BAD])
def test_bad_entries_name_entry_and_field(document: Any, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(document)
    for fragment in fragments:
        assert fragment in err.value.message
    assert err.value.code == "invalid_config"


def test_error_never_shows_an_upstream_key() -> None:
    doc = {
        "models": [
            {
                "name": "x",
                "endpoints": [{"url": "http://h", "api_key": UPSTREAM_KEY}],
                "input_cost_per_million": "cheap",
            }
        ]
    }
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert UPSTREAM_KEY not in str(err.value)


def test_unlimited_written_as_minus_two_only() -> None:
    assert parse_config({"defaults": {"tokens": {"max": -2}}}).default_pool == PoolSpec(None)
    assert parse_config({"defaults": {"tokens": {"max": 0}}}).default_pool == PoolSpec(0, 0, 0)
    with pytest.raises(ConfigError):
        parse_config({"defaults": {"tokens": {"max": -3}}})


def test_embedded_default() -> None:
    cat = embedded_default("http://127.0.0.1:9999/")
    assert sorted(cat.models) == ["demo-free", "demo-pro", "demo-restricted"]
    assert cat.default_pool == PoolSpec(20 * MICRO, 1 * MICRO, 20 * MICRO)
    assert cat.default_rule is Rule.ALLOWED
    assert cat.models["demo-restricted"].needs_consent
    assert cat.models["demo-free"].endpoints[0].url == "http://127.0.0.1:9999"
