"""API keys: ``Authorization: Bearer KEY`` with a scope, ``read`` (GETs, search, query) or ``write``
(jobs, manifests, feedback).

Keys come from ``ZCURATE_API_KEYS`` (``KEY:read,KEY2:read+write``; for development and compose) or
``ZCURATE_API_KEY_FILE`` (lines ``sha256hex(KEY):SCOPES``, so keys are hashed at rest; ``#`` starts
a comment). Both are held as SHA-256 digests; a presented key is hashed and compared with every
stored digest by ``hmac.compare_digest`` (no early exit, so timing says nothing about which one
matched). No key configured means every protected route answers 401.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from api.settings import Settings

SCOPES = ("read", "write")
HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class KeyConfigError(ValueError):
    """A malformed key list or key file: the service refuses to start."""


def hash_key(key: str) -> str:
    """sha256 hex of a key: what a key file stores (``printf %s KEY | sha256sum``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_scopes(text: str) -> frozenset[str]:
    """'read' | 'write' | 'read+write' -> the set of scopes."""
    scopes = frozenset(s.strip() for s in text.split("+") if s.strip())
    if not scopes or not scopes <= set(SCOPES):
        raise KeyConfigError(f"unknown scopes {text!r}: use read or read+write")
    return scopes


@dataclass
class KeyRing:
    """The accepted keys as (sha256 hex digest, scopes)."""

    entries: list[tuple[str, frozenset[str]]] = field(default_factory=list)

    def scopes_of(self, key: str) -> frozenset[str] | None:
        """The scopes of a presented key, or None when it is unknown."""
        digest = hash_key(key)
        found = None
        for stored, scopes in self.entries:  # every entry compared: constant time in the match position
            if hmac.compare_digest(digest, stored):
                found = scopes
        return found


def load_keyring(settings: Settings) -> KeyRing:
    """Keys from ``settings.api_keys`` and ``settings.api_key_file`` (either or both)."""
    ring = KeyRing()
    for item in settings.api_keys.split(","):
        if not item.strip():
            continue
        key, sep, scopes = item.strip().rpartition(":")
        if not sep or not key:
            raise KeyConfigError("ZCURATE_API_KEYS entries look like KEY:read or KEY:read+write")
        ring.entries.append((hash_key(key), parse_scopes(scopes)))
    if settings.api_key_file:
        try:
            with open(settings.api_key_file, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise KeyConfigError(f"cannot read ZCURATE_API_KEY_FILE: {e}") from None
        for number, line in enumerate(lines, start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            digest, sep, scopes = line.partition(":")
            digest = digest.strip().lower()
            if not sep or not HEX_DIGEST.match(digest):
                raise KeyConfigError(f"key file line {number}: expected sha256hex(KEY):SCOPES")
            ring.entries.append((digest, parse_scopes(scopes)))
    return ring


# auto_error=False: a missing header is our 401 with our JSON shape, not FastAPI's 403.
bearer = HTTPBearer(auto_error=False, description="An API key: Authorization: Bearer KEY")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require_scope(scope: str):
    """A dependency that lets a request through only with a key holding ``scope``."""

    def check(request: Request, credentials: Credentials) -> None:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise ApiError(401, "unauthorized", "missing API key: send Authorization: Bearer KEY", challenge)
        scopes = request.app.state.zc.keyring.scopes_of(credentials.credentials)
        if scopes is None:
            raise ApiError(401, "unauthorized", "unknown API key", challenge)
        if scope not in scopes:
            raise ApiError(403, "forbidden", f"this key lacks the {scope!r} scope")

    return check


ReadScope = Depends(require_scope("read"))
WriteScope = Depends(require_scope("write"))
