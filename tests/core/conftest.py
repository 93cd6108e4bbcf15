"""Service fixtures for the core tests: a ``LumenService`` factory on the real store."""

from __future__ import annotations

from typing import Any

import pytest

from lumen_jupyter.core.catalog import Catalog
from lumen_jupyter.core.clock import FakeClock
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store import Store
from tests.core.helpers import SECRET, MakeService


@pytest.fixture
def make_service(store: Store, clock: FakeClock) -> MakeService:
    """``make_service(catalog, **options)``: a service on the test's store and clock."""

    def make(catalog: Catalog, **options: Any) -> LumenService:
        options.setdefault("clock", clock)
        return LumenService(store, catalog, options.pop("secret", SECRET), **options)

    return make
