"""HS256 JSON Web Tokens with the standard library (what arangod issues from /_open/auth)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(claims: dict[str, Any], secret: bytes) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    sig = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(sig)}"


def issue(username: str, secret: bytes, lifetime: float, now: float | None = None) -> str:
    now = time.time() if now is None else now
    iat = int(now)
    return encode(
        {
            "iss": "arangodb",
            "preferred_username": username,
            "iat": iat,
            "exp": iat + max(1, int(round(lifetime))),
        },
        secret,
    )


def decode(token: str, secret: bytes, now: float | None = None) -> dict[str, Any] | None:
    """Claims of a valid, unexpired token signed with `secret`; None otherwise."""
    try:
        header_b64, payload_b64, sig_b64 = token.split(".")
        header = json.loads(_unb64(header_b64))
        if header.get("alg") != "HS256":
            return None
        expected = hmac.new(
            secret, f"{header_b64}.{payload_b64}".encode("ascii"), hashlib.sha256
        ).digest()
        if not hmac.compare_digest(expected, _unb64(sig_b64)):
            return None
        claims = json.loads(_unb64(payload_b64))
    except (ValueError, TypeError, UnicodeError):
        return None
    now = time.time() if now is None else now
    if not isinstance(claims, dict) or claims.get("iss") != "arangodb":
        return None
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and exp <= now:
        return None
    return claims
