"""Turns what a client presented at connect into an ``Identity`` (or refuses it)."""

from __future__ import annotations

import secrets

from auth.tokens import AuthError, Identity, TokenVerifier


class Authenticator:
    def __init__(self, verifier: TokenVerifier, *, allow_anonymous: bool) -> None:
        self.verifier = verifier
        self.allow_anonymous = allow_anonymous

    async def authenticate(self, token: str | None) -> Identity:
        """A token is verified; no token is a fresh guest only in anonymous mode."""
        if token:
            return await self.verifier.verify(token)
        if self.allow_anonymous:
            return new_guest()
        raise AuthError("unauthorized", "A token is required.")


def new_guest() -> Identity:
    tag = secrets.token_hex(4)
    return Identity(sub=f"guest:{tag}", name=f"Guest {tag}", exp=None)
