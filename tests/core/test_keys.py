"""Personal keys: format, HMAC at rest, hint, shown once, draft/save/revoke, the secret file."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from lumen_jupyter.core.billing import CallContext
from lumen_jupyter.core.clock import FakeClock
from lumen_jupyter.core.errors import BadRequest, NotFound
from lumen_jupyter.core.keyring import DRAFT_LIFETIME, clean_name
from lumen_jupyter.core.keys import (
    generate_key,
    hash_key,
    key_hint,
    load_or_create_secret,
    looks_like_key,
)
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store import Store
from lumen_jupyter.store.schema import api_keys, metadata
from tests.core.helpers import (
    SECRET,
    MakeService,
    assert_ledger_invariant,
    catalog,
    count,
    pool,
    who,
)

KEY_SHAPE = re.compile(r"^sk_[A-Za-z0-9_-]{43}$")


@pytest.fixture
def service(make_service: MakeService) -> LumenService:
    return make_service(catalog(pool(100)))


def test_key_format() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert KEY_SHAPE.match(key), key
        assert len(key) == 46
        assert looks_like_key(key)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sk_",
        "sk_" + "a" * 42,
        "sk_" + "a" * 44,
        "pk_" + "a" * 43,
        "sk_" + "a" * 42 + "=",
        "sk_" + "a" * 42 + "/",
        "sk_" + "a" * 42 + " ",
    ],
)
def test_looks_like_key_rejects_other_shapes(text: str) -> None:
    assert not looks_like_key(text)


def test_hint_is_first_four_and_last_four() -> None:
    key = "sk_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"
    assert key_hint(key) == "sk_A…nopq"
    assert key_hint("short") == "…"


def test_hash_is_hmac_sha256_under_the_secret() -> None:
    key = generate_key()
    expected = hmac.new(SECRET, key.encode(), hashlib.sha256).hexdigest()
    assert hash_key(key, SECRET) == expected
    assert hash_key(key, b"another secret of enough length!!") != expected


def dump_database(store: Store) -> str:
    """Every value of every table, as text."""
    parts: list[str] = []
    with store.read() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                parts.extend(str(value) for value in row)
    return "\n".join(parts)


def test_create_key_shows_it_once_and_stores_only_its_hmac(
    service: LumenService, store: Store, store_url: str
) -> None:
    created = service.create_key(who(), "laptop")
    raw = created["key"]
    assert KEY_SHAPE.match(raw)
    assert created["status"] == "active"
    assert created["name"] == "laptop"
    assert created["hint"] == f"{raw[:4]}…{raw[-4:]}"
    assert service.key_owner(raw) is not None

    with store.read() as conn:
        stored = conn.execute(select(api_keys.c.key_hash)).scalar_one()
    assert stored == hash_key(raw, SECRET)
    text = dump_database(store)
    assert raw not in text
    assert raw[3:] not in text  # not even the body without the prefix
    if store_url.startswith("sqlite"):
        db_path = Path(store_url.removeprefix("sqlite:///"))
        store.dispose()
        files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
        assert files
        for path in files:
            assert raw.encode() not in path.read_bytes()
            assert raw[3:].encode() not in path.read_bytes()

    listed = service.list_keys(who(), include_revoked=True)
    assert len(listed) == 1
    assert "key" not in listed[0]
    assert raw not in repr(listed)
    assert set(listed[0]) == set(created) - {"key"}


def test_draft_then_save_activates(service: LumenService) -> None:
    draft = service.create_key(who(), None)
    raw = draft["key"]
    assert draft["status"] == "draft"
    assert service.key_owner(raw) is None  # unusable until saved
    assert service.list_keys(who(), include_revoked=True) == []  # unlisted
    saved = service.save_key(who(), draft["id"], "  notebook key  ")
    assert (saved["status"], saved["name"]) == ("active", "notebook key")
    assert "key" not in saved
    owner = service.key_owner(raw)
    assert owner is not None
    assert (owner.key_id, owner.account_id, owner.name) == (
        draft["id"],
        service.account("alice"),
        "notebook key",
    )
    assert [k["name"] for k in service.list_keys(who())] == ["notebook key"]


def test_discarding_a_draft_deletes_it(service: LumenService, store: Store) -> None:
    draft = service.create_key(who(), None)
    assert service.revoke_key(who(), draft["id"]) == "discarded"
    assert count(store, api_keys) == 0
    assert service.key_owner(draft["key"]) is None
    with pytest.raises(NotFound):
        service.save_key(who(), draft["id"], "too late")


def test_revoke_keeps_the_row_and_counters_and_stops_the_key_at_once(
    service: LumenService, clock: FakeClock
) -> None:
    created = service.create_key(who(), "ci")
    raw = created["key"]
    owner = service.key_owner(raw)
    assert owner is not None
    ctx = CallContext(account_id=owner.account_id, source="api", key_id=owner.key_id)
    admission = service.calls.admit(who(), ctx, service.catalog.models["paid"], 20_000, "chat")
    service.calls.settle(admission, 3, 4)  # 3_000 + 8_000 micro-coins
    clock.advance(minutes=5)

    assert service.revoke_key(who(), created["id"]) == "revoked"
    assert service.key_owner(raw) is None
    assert service.list_keys(who()) == []
    (revoked,) = service.list_keys(who(), include_revoked=True)
    assert revoked["status"] == "revoked"
    assert revoked["revoked_at"] is not None
    assert (revoked["requests"], revoked["tokens"], revoked["coins_micro"]) == (1, 7, 11_000)
    assert revoked["last_used_at"] is not None
    assert service.revoke_key(who(), created["id"]) == "already revoked"
    assert service.key_owner(raw) is None
    assert_ledger_invariant(service.store)


def test_keys_are_private_to_their_owner(service: LumenService) -> None:
    created = service.create_key(who("alice"), "mine")
    with pytest.raises(NotFound):
        service.revoke_key(who("bob"), created["id"])
    with pytest.raises(NotFound):
        service.save_key(who("bob"), created["id"], "stolen")
    assert service.list_keys(who("bob"), include_revoked=True) == []
    assert service.key_owner(created["key"]) is not None


def test_stale_drafts_are_purged(service: LumenService, store: Store, clock: FakeClock) -> None:
    stale = service.create_key(who(), None)
    clock.advance(DRAFT_LIFETIME - timedelta(minutes=1))
    young = service.create_key(who(), None)
    assert count(store, api_keys) == 2  # neither is stale yet
    clock.advance(minutes=2)
    service.create_key(who("bob"), "other")  # any creation purges abandoned drafts
    with store.read() as conn:
        ids = {row.id for row in conn.execute(select(api_keys.c.id))}
    assert stale["id"] not in ids
    assert young["id"] in ids


def test_rotating_the_secret_invalidates_every_key(
    service: LumenService, make_service: MakeService
) -> None:
    raw = service.create_key(who(), "k")["key"]
    rotated = make_service(service.catalog, secret=b"a completely different secret!!!")
    assert rotated.key_owner(raw) is None
    assert service.key_owner(raw) is not None


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "tab\there", 42, None])
def test_bad_key_names(name: object) -> None:
    with pytest.raises(BadRequest) as err:
        clean_name(name)
    assert err.value.details["param"] == "name"


def test_saving_with_a_bad_name_changes_nothing(service: LumenService) -> None:
    draft = service.create_key(who(), None)
    with pytest.raises(BadRequest):
        service.save_key(who(), draft["id"], "   ")
    with pytest.raises(BadRequest):
        service.create_key(who(), "")
    assert service.key_owner(draft["key"]) is None
    assert service.save_key(who(), draft["id"], "x" * 100)["status"] == "active"


def test_lookup_ignores_malformed_and_unknown_keys(service: LumenService) -> None:
    service.create_key(who(), "k")
    assert service.key_owner("not a key") is None
    assert service.key_owner(generate_key()) is None


def test_secret_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "lumen_secret"
    first = load_or_create_secret(path)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first


def test_secret_file_is_0600_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "secret"
        load_or_create_secret(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_readable_secret_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    load_or_create_secret(path)
    path.chmod(mode)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_or_create_secret(path)


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(ValueError):
        load_or_create_secret(path)
