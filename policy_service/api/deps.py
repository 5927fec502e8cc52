"""FastAPI dependencies: ``X-API-Key`` authentication and access to the app's service objects.

Keys are compared in constant time: both the user and the admin key are checked on every request
(``hmac.compare_digest`` on sha256 digests, so neither the key's length nor which key matched leaks through
timing). No key or an unknown key -> 401; the user key on an admin endpoint -> 403. The admin key is accepted
on user endpoints too.
"""

from __future__ import annotations

import hashlib
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


@dataclass(frozen=True)
class KeyDigests:
    """sha256 digests of the two keys, computed once at app creation."""

    user: bytes
    admin: bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyDigests:
        return cls(
            user=hashlib.sha256(settings.api_key.get_secret_value().encode()).digest(),
            admin=hashlib.sha256(settings.admin_key.get_secret_value().encode()).digest(),
        )

    def role(self, key: str) -> Role | None:
        given = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        is_user = hmac.compare_digest(given, self.user)
        is_admin = hmac.compare_digest(given, self.admin)  # always both: no early exit
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
