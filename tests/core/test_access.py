"""Model access precedence, and consent bound to the notice's exact text."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lumen_jupyter.core.access import may_call, resolve_access, resolve_rule
from lumen_jupyter.core.catalog import Access, Catalog, GroupSpec, ModelSpec, Rule, UserSpec
from lumen_jupyter.core.errors import BadRequest, NotFound, PermissionDenied
from lumen_jupyter.store.schema import consents
from tests.core.helpers import MakeService, admit, catalog, count, model, pool, who

A, B = Rule.ALLOWED, Rule.BLOCKED
M = "m"


def group(name: str, rule: Rule | None = None, default: Rule | None = None) -> GroupSpec:
    return GroupSpec(name=name, rules={M: rule} if rule else {}, default_rule=default)


PRECEDENCE = [
    # (id, model active, model access, user rule, user default, groups, global, expected)
    ("disabled-blocks-everyone", False, A, A, A, [group("g", A, A)], A, B),
    ("per-user-allowed-beats-group-blocked", True, B, A, None, [group("g", B)], B, A),
    ("per-user-blocked-beats-group-allowed", True, A, B, None, [group("g", A)], A, B),
    ("any-group-blocked-wins", True, A, None, None, [group("a", A), group("b", B)], A, B),
    ("groups-allowed", True, B, None, None, [group("a", A), group("b", A)], B, A),
    ("group-rule-beats-model-setting", True, B, None, None, [group("g", A)], B, A),
    ("model-setting-allowed", True, A, None, B, [group("g", None, B)], B, A),
    ("model-setting-blocked", True, B, None, A, [group("g", None, A)], A, B),
    ("group-defaults-any-allowed-wins", True, None, None, B,
     [group("a", None, B), group("b", None, A)], B, A),
    ("group-defaults-all-blocked", True, None, None, A, [group("a", None, B)], A, B),
    ("group-default-beats-user-default", True, None, None, B, [group("g", None, A)], B, A),
    ("user-default-allowed", True, None, None, A, [group("g")], B, A),
    ("user-default-blocked", True, None, None, B, [], A, B),
    ("global-default-allowed", True, None, None, None, [group("g")], A, A),
    ("global-default-blocked", True, None, None, None, [], B, B),
]  # fmt: skip


@pytest.mark.parametrize(
    ("active", "access", "user_rule", "user_default", "groups", "global_rule", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in PRECEDENCE],
)
def test_precedence(
    active: bool,
    access: Rule | None,
    user_rule: Rule | None,
    user_default: Rule | None,
    groups: list[GroupSpec],
    global_rule: Rule,
    expected: Rule,
) -> None:
    spec = ModelSpec(name=M, active=active, access=access)
    user = UserSpec(name="u", rules={M: user_rule} if user_rule else {}, default_rule=user_default)
    assert resolve_rule(spec, user, groups, global_rule) is expected


def test_rules_for_other_models_do_not_apply() -> None:
    spec = ModelSpec(name=M)
    user = UserSpec(name="u", rules={"other": B})
    groups = [GroupSpec(name="g", rules={"other": B})]
    assert resolve_rule(spec, user, groups, A) is A


def test_consent_turns_allowed_into_needs_ack() -> None:
    spec = ModelSpec(name=M, needs_consent=True, notice="v1")
    cat = Catalog(models={M: spec}, default_rule=A)
    user = UserSpec(name="u")
    assert resolve_access(spec, user, [], cat, None) is Access.NEEDS_ACK
    assert resolve_access(spec, user, [], cat, spec.notice_digest) is Access.CONSENTED
    changed = replace(spec, notice="v2")
    assert resolve_access(changed, user, [], cat, spec.notice_digest) is Access.NEEDS_ACK
    blocked = replace(spec, access=B)
    assert resolve_access(blocked, user, [], cat, spec.notice_digest) is Access.BLOCKED
    plain = ModelSpec(name=M)
    assert resolve_access(plain, user, [], cat, None) is Access.ALLOWED


@pytest.mark.parametrize(
    ("access", "require", "expected"),
    [
        (Access.ALLOWED, True, True),
        (Access.CONSENTED, True, True),
        (Access.NEEDS_ACK, True, False),
        (Access.NEEDS_ACK, False, True),
        (Access.BLOCKED, True, False),
        (Access.BLOCKED, False, False),
    ],
)
def test_may_call(access: Access, require: bool, expected: bool) -> None:
    assert may_call(access, require) is expected


def consent_catalog(notice: str) -> Catalog:
    return catalog(
        pool(100),
        models={
            "open": model("open"),
            "restricted": model("restricted", needs_consent=True, notice=notice),
            "locked": model("locked", needs_consent=True, notice=notice, access=B),
            "off": model("off", active=False),
        },
    )


def test_consent_versioning(make_service: MakeService) -> None:
    v1 = make_service(consent_catalog("Terms v1"))
    assert v1.access_map(who()) == {
        "open": Access.ALLOWED,
        "restricted": Access.NEEDS_ACK,
        "locked": Access.BLOCKED,
        "off": Access.BLOCKED,
    }
    with pytest.raises(PermissionDenied) as err:
        v1.callable_model(who(), "restricted")
    assert err.value.code == "consent_required"

    detail = v1.consent(who(), "restricted")
    assert detail["access"] == "consented"
    assert detail["notice"] == "Terms v1"
    assert v1.access_map(who())["restricted"] is Access.CONSENTED
    assert v1.callable_model(who(), "restricted").name == "restricted"
    assert v1.access_map(who("bob"))["restricted"] is Access.NEEDS_ACK  # per user

    again = v1.consent(who(), "restricted", v1.catalog.models["restricted"].notice_digest)
    assert again["access"] == "consented"  # twice is harmless
    assert count(v1.store, consents) == 1

    v2 = make_service(consent_catalog("Terms v2: now with more terms"))
    assert v2.access_map(who())["restricted"] is Access.NEEDS_ACK
    with pytest.raises(BadRequest) as err:
        v2.consent(who(), "restricted", v1.catalog.models["restricted"].notice_digest)
    assert err.value.code == "notice_changed"
    assert v2.access_map(who())["restricted"] is Access.NEEDS_ACK
    current = v2.catalog.models["restricted"].notice_digest
    assert v2.consent(who(), "restricted", current)["access"] == "consented"
    assert count(v2.store, consents) == 1


def test_consent_is_shared_by_servers_on_one_database(make_service: MakeService) -> None:
    """JupyterHub: several servers on one database must agree on a user's consents."""
    first = make_service(consent_catalog("Terms"))
    second = make_service(consent_catalog("Terms"))
    assert second.access_map(who())["restricted"] is Access.NEEDS_ACK
    first.consent(who(), "restricted")
    assert second.access_map(who())["restricted"] is Access.CONSENTED


@pytest.mark.parametrize("name", ["open", "locked", "off"])
def test_consent_to_a_model_that_does_not_take_it(make_service: MakeService, name: str) -> None:
    service = make_service(consent_catalog("Terms"))
    with pytest.raises(BadRequest):
        service.consent(who(), name)
    assert count(service.store, consents) == 0


def test_consent_to_an_unknown_model(make_service: MakeService) -> None:
    with pytest.raises(NotFound):
        make_service(consent_catalog("Terms")).consent(who(), "nope")


def test_callable_model_gate(make_service: MakeService) -> None:
    service = make_service(consent_catalog("Terms"))
    assert service.callable_model(who(), "open").name == "open"
    with pytest.raises(NotFound) as nf:
        service.callable_model(who(), "nope")
    assert nf.value.code == "model_not_found"
    with pytest.raises(NotFound) as off:
        service.callable_model(who(), "off")
    assert off.value.code == "model_disabled"
    with pytest.raises(PermissionDenied) as locked:
        service.callable_model(who(), "locked")
    assert locked.value.code == "model_blocked"


def test_consent_not_required_lets_needs_ack_through(make_service: MakeService) -> None:
    cat = replace(consent_catalog("Terms"), require_consent=False)
    service = make_service(cat)
    assert service.callable_model(who(), "restricted").name == "restricted"
    admission = admit(service, name="restricted")
    assert service.calls.settle(admission, 1, 1) is not None


def test_group_rules_through_the_service(make_service: MakeService) -> None:
    cat = replace(
        consent_catalog("Terms"),
        groups={"interns": GroupSpec(name="interns", rules={"open": B})},
        users={"boss": UserSpec(name="boss", rules={"locked": A}, groups=frozenset({"interns"}))},
    )
    service = make_service(cat)
    assert service.access_map(who("ivy", ("interns",)))["open"] is Access.BLOCKED
    assert service.access_map(who("ivy"))["open"] is Access.ALLOWED
    boss = service.access_map(who("boss"))
    assert boss["open"] is Access.BLOCKED  # configured membership counts
    assert boss["locked"] is Access.NEEDS_ACK  # a per-user rule unblocks; consent still due
    assert boss["off"] is Access.BLOCKED
