"""Keys and models a page at a time: ``limit``/``offset`` with the ``total``, in the
profile's order; no parameter still sends everything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lumen_jupyter.core.paging import name_order

KEY_NAMES = [
    "key 10",
    "key 9",
    "Key 2",
    "key 1",
    "ältere Notizen",
    "alpha",
    "Alpha",
    "beta-2",
    "beta_2",
    "beta 2",
    "ci runner",
    "laptop",
    "lab 007",
    "lab 7b",
    "zeta",
    "[draft]",
    "key 1.10",
    "key 1.5",
    "notebook",
    "Ørsted",
]
MODEL_NAMES = [f"vendor-{i % 3}/model-{i}" for i in range(25)] + ["Big Model", "big model 2"]


def profile_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: (name_order(row["name"]), row.get("id", row["name"])))


@pytest.fixture
def lumen_config(tmp_path: Path) -> dict[str, Any]:
    lines = ["version: 2", "defaults:", "  tokens: {max: 20}", "  models: allowed", "models:"]
    for name in MODEL_NAMES:
        lines += [
            f"  - name: {name}",
            f"    endpoints: [{{url: 'http://127.0.0.1:9/v1', model: {name}}}]",
        ]
    config = tmp_path / "lumen.yaml"
    config.write_text("\n".join(lines) + "\n")
    return {"config_file": str(config), "demo_backend": "off", "health_interval": 0}


async def make_keys(api: Any) -> list[int]:
    ids = []
    for name in KEY_NAMES:
        status, created = await api("POST", "keys", {"name": name})
        assert status == 201
        ids.append(created["id"])
    for revoked in ids[::4]:
        status, _ = await api("DELETE", f"keys/{revoked}")
        assert status == 200
    return ids


async def pages(api: Any, path: str, field: str, size: int) -> tuple[list[Any], set[int]]:
    rows: list[Any] = []
    totals = set()
    offset = 0
    while True:
        sep = "&" if "?" in path else "?"
        status, body = await api("GET", f"{path}{sep}limit={size}&offset={offset}")
        assert status == 200
        assert len(body[field]) <= size
        totals.add(body["total"])
        rows += body[field]
        offset += size
        if not body[field]:
            return rows, totals


async def test_key_pages_add_up_to_the_whole_list(api: Any) -> None:
    await make_keys(api)
    for query, expected in (("keys", 15), ("keys?include_revoked=true", 20)):
        status, whole = await api("GET", query)
        assert status == 200
        assert whole["total"] == len(whole["keys"]) == expected
        assert whole["keys"] == profile_order(whole["keys"])
        for size in (1, 4, 7, 100):
            paged, totals = await pages(api, query, "keys", size)
            assert totals == {expected}
            assert paged == whole["keys"]


async def test_keys_come_in_the_profile_order(api: Any) -> None:
    await make_keys(api)
    _, first = await api("GET", "keys", params={"include_revoked": "true", "limit": "8"})
    assert [k["name"] for k in first["keys"]] == [
        "[draft]",
        "alpha",
        "Alpha",
        "ältere Notizen",
        "beta 2",
        "beta_2",
        "beta-2",
        "ci runner",
    ]
    _, rest = await api("GET", "keys?include_revoked=true&offset=8&limit=12")
    assert [k["name"] for k in rest["keys"]] == [
        "key 1",
        "key 1.5",
        "key 1.10",
        "Key 2",
        "key 9",
        "key 10",
        "lab 007",
        "lab 7b",
        "laptop",
        "notebook",
        "Ørsted",
        "zeta",
    ]
    assert rest["total"] == 20


async def test_a_page_past_the_end_is_empty_with_the_total(api: Any) -> None:
    await make_keys(api)
    status, body = await api("GET", "keys?offset=100")
    assert status == 200 and body == {"keys": [], "total": 15}
    status, body = await api("GET", "keys?limit=0")
    assert status == 200 and body == {"keys": [], "total": 15}


async def test_model_pages_add_up_to_the_whole_list(api: Any) -> None:
    status, whole = await api("GET", "models")
    assert status == 200
    assert whole["total"] == len(whole["models"]) == len(MODEL_NAMES)
    names = [m["name"] for m in whole["models"]]
    assert names[:4] == ["Big Model", "big model 2", "vendor-0/model-0", "vendor-0/model-3"]
    assert names.index("vendor-0/model-9") < names.index("vendor-0/model-12")
    for size in (2, 10, 27):
        paged, totals = await pages(api, "models", "models", size)
        assert totals == {len(MODEL_NAMES)}
        assert paged == whole["models"]
    status, first = await api("GET", "models?limit=3")
    assert [m["name"] for m in first["models"]] == names[:3]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("keys", {"limit": "-1"}),
        ("keys", {"limit": "ten"}),
        ("keys", {"offset": "1.5"}),
        ("keys", {"limit": "\u0663"}),  # an Arabic-Indic three: a digit, but not ASCII
        ("keys", {"limit": "1000000000"}),
        ("models", {"offset": "-3"}),
        ("models", {"limit": ""}),
    ],
)
async def test_a_bad_limit_or_offset_is_a_clear_400(
    api: Any, path: str, params: dict[str, str]
) -> None:
    status, err = await api("GET", path, params=params)
    assert status == 400, err
    assert "must be a whole number" in err["error"]["message"]
    assert err["error"]["param"] == next(iter(params))
