"""FastAPI dependencies: ``X-API-Key`` authentication and access to the app's service objects.

Keys are compared in constant time: both the user and the admin key are checked on every request with
``hmac.compare_digest`` on equal-length buffers (the given key zero-padded to a length fixed at start, at
least both keys' lengths), and the lengths are compared as integers, so neither a key's length nor which key
matched leaks through timing. (This replaced sha256 digests of the given key: the same guarantee without
a hash per request, which cost more than the comparison on the decide path.) No key or an unknown key -> 401;
the user key on an admin endpoint -> 403. The admin key is accepted on user endpoints too.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from ..config import Settings
from ..metrics import ServiceMetrics
from ..registry import PolicyRegistry
from ..service import DecisionService

__all__ = [
    "AdminKey",
    "KeyDigests",
    "MetricsDep",
    "RegistryDep",
    "ServiceDep",
    "SettingsDep",
    "UserKey",
    "authenticate",
]

Role = Literal["user", "admin"]

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="MANGO_API_KEY for decide/policies; MANGO_ADMIN_KEY for admin endpoints",
)


#: The fixed length keys are padded to for comparison (longer keys raise it to their length).
_KEY_PAD_BYTES = 256


@dataclass(frozen=True)
class KeyDigests:
    """The two keys as zero-padded buffers of one fixed length (``pad``), prepared once at app creation.

    A header value never holds a NUL byte, so the padding cannot make two different keys equal; a given key
    longer than ``pad`` is cut for the comparison and fails on its length.
    """

    user: bytes
    admin: bytes
    user_len: int
    admin_len: int
    pad: int

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyDigests:
        user = settings.api_key.get_secret_value().encode()
        admin = settings.admin_key.get_secret_value().encode()
        pad = max(_KEY_PAD_BYTES, len(user), len(admin))
        return cls(
            user=user.ljust(pad, b"\0"),
            admin=admin.ljust(pad, b"\0"),
            user_len=len(user),
            admin_len=len(admin),
            pad=pad,
        )

    def role(self, key: str) -> Role | None:
        given = key.encode("utf-8", "surrogatepass")
        n = len(given)
        fixed = given[: self.pad].ljust(self.pad, b"\0")
        # always both comparisons, no early exit; "&" on bools evaluates both sides
        is_user = hmac.compare_digest(fixed, self.user) & (n == self.user_len)
        is_admin = hmac.compare_digest(fixed, self.admin) & (n == self.admin_len)
        return "admin" if is_admin else "user" if is_user else None


def authenticate(request: Request, key: str | None) -> Role:
    """The caller's role for ``key``; 401 ``HTTPException`` when it is missing or unknown."""
    if not key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing X-API-Key header", headers={"WWW-Authenticate": "ApiKey"}
        )
    role = request.app.state.key_digests.role(key)
    if role is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid X-API-Key", headers={"WWW-Authenticate": "ApiKey"}
        )
    return role


async def require_user(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> Role:
    """User endpoints: the user or the admin key."""
    return authenticate(request, key)


async def require_admin(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> Role:
    """Admin endpoints: the admin key only (the user key gets 403)."""
    role = authenticate(request, key)
    if role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this endpoint needs the admin key (MANGO_ADMIN_KEY)")
    return role


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_service(request: Request) -> DecisionService:
    return request.app.state.service  # type: ignore[no-any-return]


async def get_registry(request: Request) -> PolicyRegistry:
    return request.app.state.registry  # type: ignore[no-any-return]


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


UserKey = Annotated[Role, Depends(require_user)]
AdminKey = Annotated[Role, Depends(require_admin)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[DecisionService, Depends(get_service)]
RegistryDep = Annotated[PolicyRegistry, Depends(get_registry)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
