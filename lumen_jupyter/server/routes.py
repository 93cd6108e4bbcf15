"""lumen's URL map, and how a host joins its own base class to the endpoints.

The endpoint classes (:mod:`.rest`, :mod:`.model_api`, :mod:`.events`) derive from
:class:`~.base.LumenHandler` only.  A host combines each with its base class once:
``combine(routes, APIHandler)`` gives classes whose method order is endpoint, lumen
base, then the host's (Jupyter's checks run in ``prepare``), while the standalone
service uses tornado's plain ``RequestHandler`` as it is.
"""

from __future__ import annotations

from tornado import web

Routes = list[tuple[str, type[web.RequestHandler]]]

_COMBINED: dict[tuple[type, type], type[web.RequestHandler]] = {}


def combine(routes: Routes, host_base: type[web.RequestHandler]) -> Routes:
    """``routes`` with every handler class also deriving from ``host_base``."""
    return [(pattern, _with_base(handler, host_base)) for pattern, handler in routes]


def _with_base(
    handler: type[web.RequestHandler], host_base: type[web.RequestHandler]
) -> type[web.RequestHandler]:
    if issubclass(handler, host_base):
        return handler
    key = (handler, host_base)
    combined = _COMBINED.get(key)
    if combined is None:
        combined = type(handler.__name__, (handler, host_base), {"__module__": handler.__module__})
        combined.__qualname__ = handler.__qualname__
        _COMBINED[key] = combined
    return combined


def lumen_routes(prefix: str, *, model_api: bool = True) -> Routes:
    """Every lumen route under ``prefix`` (``<base_url>lumen``): ``api/*`` and ``v1/*``."""
    from .model_api import model_routes
    from .rest import api_routes

    routes = api_routes(f"{prefix}/api")
    if model_api:
        routes += model_routes(f"{prefix}/v1")
    return routes
