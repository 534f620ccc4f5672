"""What the web pages keep in the app: the templates, the session sealer (made on first use) and
the sign-in throttle."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
from aiohttp import web

from collector.secretbox import SecretBox
from collector.web.sessions import SessionSealer, load_or_create_secret
from collector.web.throttle import SignInThrottle

if TYPE_CHECKING:
    from collector.oidc import OidcClient


class WebState:
    def __init__(self, templates: jinja2.Environment, keys_folder: Path) -> None:
        self.templates = templates
        self.keys_folder = keys_folder
        self._sealer: SessionSealer | None = None
        self.throttle = SignInThrottle()
        self._box: SecretBox | None = None
        self.oidc: OidcClient | None = None  # set while the app runs, if single sign-on is set up

    def sealer(self) -> SessionSealer:
        """The sealer, from the secret beside the signing keys (created by the first instance)."""
        if self._sealer is None:
            self._sealer = SessionSealer(load_or_create_secret(self.keys_folder))
        return self._sealer

    def secret_box(self) -> SecretBox:
        """What seals people's TOTP secrets at rest, from the same folder secret."""
        if self._box is None:
            self._box = SecretBox(load_or_create_secret(self.keys_folder))
        return self._box


WEB = web.AppKey("web", WebState)
