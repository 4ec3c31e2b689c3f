"""The ``user`` the upstream receives: a stable, keyed pseudonym of the token's ``sub``."""

from __future__ import annotations

import hashlib
import hmac


class UserPseudonym:
    """The ``user`` sent upstream: a stable pseudonym of the token's ``sub``.

    HMAC-SHA256 of the ``sub`` under a server secret every node shares, so one user has
    one pseudonym across requests and nodes, different users differ, and nobody without
    the secret can link it to the ``sub``.  The key is ``JWT_SECRET`` when set, else the
    upstream API key, else a fixed per-deployment text (``create_app`` decides); it is
    never logged (no ``repr``).
    """

    __slots__ = ("_key",)

    def __init__(self, secret: str) -> None:
        # A key of its own (derived, domain-separated): the pseudonym reveals nothing
        # about the secret it came from.
        self._key = hmac.new(secret.encode(), b"llm-relay user pseudonym v1", "sha256").digest()

    def __call__(self, sub: str) -> str:
        return "u_" + hmac.new(self._key, sub.encode(), hashlib.sha256).hexdigest()[:32]

    def __repr__(self) -> str:
        return "UserPseudonym(<secret>)"
