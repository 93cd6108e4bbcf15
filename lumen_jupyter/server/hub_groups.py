"""Pools and model rules kept on the hub's groups (``properties.lumen``).

A hub administrator may keep a group's lumen settings on the group itself::

    PUT /hub/api/groups/physics/properties
    {"lumen": {"tokens": {"max": 200, "refresh": 10}, "models": {"demo-pro": "allowed"}}}

The value is what a YAML ``groups.physics`` entry holds, without ``members``: a hub
group's members are the hub's.  The service reads it with the hub's group list
(``read:groups``, kept as long as every other answer of the hub) and serves with the
YAML's groups plus these.  Two rules keep it safe to use:

* the YAML has the last word: a group the YAML defines keeps the YAML's settings,
  and the hub's are ignored (logged whenever the hub's settings change);
* nothing the hub holds stops a call: settings that do not parse are logged and
  skipped (one bad group never hides the others), and when the group list cannot be
  read (the service's role lacks ``read:groups``, the hub is down) the last settings
  stay, and the list is asked for again after the cache time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ..core.catalog import Catalog, GroupSpec
from ..core.config import parse_group
from ..core.errors import ConfigError
from ..core.service import LumenService
from .hub_client import HubClient, HubUnavailable

log = logging.getLogger("lumen_jupyter.hub")


def catalog_with_hub_groups(base: Catalog, settings: Mapping[str, Any]) -> Catalog:
    """``base`` with the groups the hub's settings describe and ``base`` does not."""
    added: dict[str, GroupSpec] = {}
    for name, entry in sorted(settings.items()):
        if name in base.groups:
            log.warning(
                "lumen: hub group %r: its properties.lumen are ignored, the configuration "
                "file defines this group",
                name,
            )
            continue
        try:
            added[name] = hub_group(name, entry)
        except ConfigError as error:
            log.warning("lumen: hub group %r: properties.lumen ignored: %s", name, error)
    if not added:
        return base
    return replace(base, groups={**base.groups, **added})


def hub_group(name: str, entry: Any) -> GroupSpec:
    """A hub group's settings as a group of the catalog (``ConfigError`` if they are wrong)."""
    if isinstance(entry, Mapping) and "members" in entry:
        raise ConfigError(
            f"groups.{name}.members: a hub group's members are the hub's; "
            "add users to the group at the hub"
        )
    return parse_group(name, entry)


class HubGroupSettings:
    """Keeps a service's catalog in step with the settings on the hub's groups."""

    def __init__(
        self,
        client: HubClient,
        service: LumenService,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.service = service
        self._base = service.catalog  # the YAML's: what the hub's settings are added to
        self._applied: Mapping[str, Any] = {}
        self._clock = clock
        self._retry_at = 0.0
        self._failing = False

    async def refresh(self) -> None:
        """Apply the hub's group settings if they changed (asked at most once per cache
        time; a failure keeps the settings in use)."""
        if self._clock() < self._retry_at:
            return
        try:
            settings = (await self.client.groups()).settings
        except HubUnavailable as error:
            self._retry_at = self._clock() + max(self.client.cache_seconds, 1.0)
            if not self._failing:
                log.warning(
                    "lumen: the hub's group list could not be read, so group settings "
                    "kept at the hub (properties.lumen) stay as they were: %s",
                    error.message,
                )
            self._failing = True
            return
        self._failing = False
        if settings is not self._applied:  # a new answer of the hub's
            if settings != self._applied:
                self.service.catalog = catalog_with_hub_groups(self._base, settings)
            self._applied = settings
