"""The admin page of a hub deployment: ``<prefix>admin/``, with the hub's browser login.

The page is a small HTML document that loads ``admin.js``, a bundle built from the
same view code as the profile (``labextension/src/admin.ts`` with the shared
table, dialogs and number formatting of ``src/views``) by the widget bundle's
build.  The script does everything through ``api/admin/*`` - the ``jupyter lumen``
commands over HTTP - with the login cookie and the page's XSRF token, so the
page can do nothing that the caller's rights (:mod:`.rights`) do not allow there.

The login is JupyterHub's OAuth (with PKCE): a visitor without a valid cookie is
sent to the hub's ``authorize`` page, which comes back to ``<prefix>oauth_callback``
with a code; the service trades it for a token and keeps that in a signed,
HTTP-only cookie on its own prefix.  The OAuth state lives in a signed cookie and
the PKCE verifier is derived from it, so a login started on one worker finishes on
any other.  ``<prefix>`` itself (the hub's Services menu links there) leads to the page.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tornado import web

from ..core.errors import LumenError
from .hub_auth import XSRF_HEADER, HubSessions
from .rights import rights_from_scopes
from .routes import Routes

STATIC = Path(__file__).resolve().parents[1] / "widgets" / "static"
"""Where the front-end build puts the bundles (``labextension/scripts/bundle-widget.mjs``)."""
STATE_MINUTES = 10
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""The page runs only its own script, talks only to this origin, and may not be framed."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class HubPageHandler(web.RequestHandler):
    """A browser page of the service: HTML answers, the hub's login."""

    @property
    def hub(self) -> HubSessions:
        return self.settings["lumen_hub"]  # type: ignore[no-any-return]

    @property
    def state_cookie(self) -> str:
        return f"{self.hub.cookie_name}-oauth-state"

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy", PAGE_POLICY)
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "same-origin")

    def start_login(self) -> None:
        """Send the browser to the hub's login, to come back to this page."""
        nonce = secrets.token_urlsafe(16)
        state = _b64(json.dumps({"n": nonce, "next": self.request.uri}).encode())
        self.set_signed_cookie(
            self.state_cookie,
            state,
            expires_days=None,
            max_age=STATE_MINUTES * 60,
            path=self.hub.settings.prefix,
            httponly=True,
            secure=self.request.protocol == "https",
            samesite="Lax",
        )
        settings = self.hub.settings
        query = urlencode(
            {
                "client_id": settings.client_id,
                "redirect_uri": settings.oauth_callback_url,
                "response_type": "code",
                "state": state,
                "code_challenge": self.hub.code_challenge(nonce),
                "code_challenge_method": "S256",
            }
        )
        self.redirect(f"{settings.authorize_url}?{query}")

    def show(self, status: int, title: str, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            _document(
                title,
                f'<main class="lumen-admin-message"><h1>{html.escape(title)}</h1>'
                f"<p>{html.escape(message)}</p></main>",
            )
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        error = exc_info[1] if exc_info else None
        if isinstance(error, LumenError):
            self.show(error.status, "Lumen", error.message)
        elif isinstance(error, web.HTTPError) and error.log_message:
            self.show(status_code, "Lumen", error.log_message)
        else:
            self.show(status_code, "Lumen", self._reason)


class AdminPageHandler(HubPageHandler):
    """``<prefix>admin/``: the page, for callers with lumen admin rights."""

    async def get(self) -> None:
        try:
            found = await self.hub.session_of(self)
        except LumenError as error:
            self.show(error.status, "Lumen administration", error.message)
            return
        if found is None:
            self.start_login()
            return
        user, token = found
        rights = rights_from_scopes(user.scopes)
        if not rights:
            self.show(
                403,
                "Lumen administration",
                f"You are signed in as {user.name}, without lumen admin rights. They come "
                "from the hub's scopes custom:lumen:admin or custom:lumen:grant!group=GROUP "
                "(the hub's admin flag alone gives none).",
            )
            return
        prefix = self.hub.settings.prefix
        data = {
            "api": f"{prefix}lumen/api/admin/",
            "user": user.name,
            "rights": json.dumps(rights.to_json()),
            "xsrf": self.hub.xsrf_token(token),
            "xsrf-header": XSRF_HEADER,
        }
        attrs = " ".join(f'data-{name}="{html.escape(value)}"' for name, value in data.items())
        body = (
            f'<main id="lumen-admin" class="lumen-admin" {attrs}>'
            "<h1>Lumen administration</h1>"
            "<noscript><p>This page needs JavaScript. The same commands are "
            "<code>jupyter lumen --url URL …</code> on the command line.</p></noscript>"
            "</main>"
            '<script type="module" src="static/admin.js"></script>'
        )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(_document("Lumen administration", body))


class OAuthCallbackHandler(HubPageHandler):
    """``<prefix>oauth_callback``: the end of the hub's login."""

    async def get(self) -> None:
        error = self.get_query_argument("error", "")
        if error:
            reason = self.get_query_argument("error_description", error)
            self.show(400, "Login failed", f"The hub refused the login: {reason}")
            return
        code = self.get_query_argument("code", "")
        state = self.get_query_argument("state", "")
        kept = self.get_signed_cookie(self.state_cookie, max_age_days=1)
        if not code or not state or kept is None or not hmac.compare_digest(kept, state.encode()):
            self.show(
                403,
                "Login failed",
                "This login was not started here, or took too long; open the page again.",
            )
            return
        try:
            started = json.loads(_unb64(state))
            nonce = str(started["n"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            self.show(400, "Login failed", "The login's state is not readable.")
            return
        self.clear_cookie(self.state_cookie, path=self.hub.settings.prefix)
        try:
            token = await self.hub.client.token_for_code(
                code,
                client_id=self.hub.settings.client_id,
                redirect_uri=self.hub.settings.oauth_callback_url,
                code_verifier=self.hub.code_verifier(nonce),
            )
        except LumenError as failure:
            self.show(failure.status, "Login failed", failure.message)
            return
        self.hub.set_login(self, token)
        self.redirect(self.hub.safe_next(started.get("next")))


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        '<link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="static/profile.css">'
        '<link rel="stylesheet" href="static/admin.css">'
        f"</head><body>{body}</body></html>"
    )


class ToAdminPage(HubPageHandler):
    """``<prefix>`` and ``<prefix>admin``: where the hub's Services menu links."""

    def get(self) -> None:
        self.redirect(f"{self.hub.settings.prefix}admin/")


class AssetHandler(web.StaticFileHandler):
    """The page's script and styles (built files; no secrets among them)."""

    def initialize(self, path: str = str(STATIC), *args: Any, **kwargs: Any) -> None:
        super().initialize(path, *args, **kwargs)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")


def admin_page_routes(prefix: str) -> Routes:
    """The page, its assets, the login's callback, and ``<prefix>`` leading to the page."""
    return [
        (rf"{prefix}", ToAdminPage),
        (rf"{prefix}admin", ToAdminPage),
        (rf"{prefix}admin/", AdminPageHandler),
        (rf"{prefix}admin/static/(admin\.js|admin\.css|profile\.css)", AssetHandler),
        (rf"{prefix}oauth_callback", OAuthCallbackHandler),
    ]
