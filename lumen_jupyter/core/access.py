"""A user's access to a model: the precedence chain of Lumen, plus consent.

Order: a disabled model is blocked for everyone, then a per-user rule, then the
user's groups' rules for the model (any blocked wins), then the model's own
setting, then the groups' defaults (any allowed wins), then the user's default,
then the global default.  An allowed model that needs consent is
``needs_ack`` until the user acknowledges its *current* notice.
"""

from __future__ import annotations

from collections.abc import Sequence

from .catalog import Access, Catalog, GroupSpec, ModelSpec, Rule, UserSpec


def resolve_rule(
    model: ModelSpec,
    user: UserSpec,
    groups: Sequence[GroupSpec],
    global_default: Rule,
) -> Rule:
    """Allowed or blocked, before consent is considered."""
    if not model.active:
        return Rule.BLOCKED
    if model.name in user.rules:
        return user.rules[model.name]
    group_rules = [g.rules[model.name] for g in groups if model.name in g.rules]
    if group_rules:
        return Rule.BLOCKED if Rule.BLOCKED in group_rules else Rule.ALLOWED
    if model.access is not None:
        return model.access
    group_defaults = [g.default_rule for g in groups if g.default_rule is not None]
    if group_defaults:
        return Rule.ALLOWED if Rule.ALLOWED in group_defaults else Rule.BLOCKED
    if user.default_rule is not None:
        return user.default_rule
    return global_default


def resolve_access(
    model: ModelSpec,
    user: UserSpec,
    groups: Sequence[GroupSpec],
    catalog: Catalog,
    consented_digest: str | None,
) -> Access:
    """The badge: allowed, blocked, needs_ack, or consented.

    ``consented_digest`` is the notice digest the user acknowledged, if any; a
    consent to an older notice does not count.
    """
    rule = resolve_rule(model, user, groups, catalog.default_rule)
    if rule is Rule.BLOCKED:
        return Access.BLOCKED
    if not model.needs_consent:
        return Access.ALLOWED
    if consented_digest is not None and consented_digest == model.notice_digest:
        return Access.CONSENTED
    return Access.NEEDS_ACK


def may_call(access: Access, require_consent: bool) -> bool:
    """Whether a call may go through with this access."""
    if access in (Access.ALLOWED, Access.CONSENTED):
        return True
    return access is Access.NEEDS_ACK and not require_consent
