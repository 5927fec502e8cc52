"""Service settings: environment variables with the ``MANGO_`` prefix, parsed once at start.

Required: ``MANGO_API_KEY`` (sent by training jobs in the ``X-API-Key`` header for ``/v1/decide`` and
``/v1/policies``) and ``MANGO_ADMIN_KEY`` (for ``POST /v1/policies/reload``). Generate each with
``python -c "import secrets; print(secrets.token_urlsafe(32))"``. Empty, short (< 16 characters) or
placeholder keys (``changeme``, ``secret``, ...) and an admin key equal to the API key are refused at start
unless ``MANGO_DEV_MODE=true`` is set explicitly (development on a laptop; never in production).

This module imports neither FastAPI nor the policy runtime, so a misconfigured ``mango serve`` fails in well
under a second.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_POLICY_DIR", "MIN_SECRET_LENGTH", "Settings", "weak_secret_reason"]

log = logging.getLogger(__name__)

#: Where the project's shipped learned default policy lives (``<name>.json`` + ``<name>.safetensors``): the
#: policy runtime's package data, ``client.policy.DEFAULT_POLICY_DIR`` (spelled out, not imported, to keep
#: this module light; a test checks that the two agree).
DEFAULT_POLICY_DIR = Path(__file__).resolve().parent.parent / "client" / "policy" / "default_policy"
#: Shortest key accepted outside dev mode.
MIN_SECRET_LENGTH = 16
_PLACEHOLDERS = (
    "changeme",
    "change-me",
    "change_me",
    "changethis",
    "secret",
    "password",
    "passwd",
    "admin",
    "apikey",
    "api-key",
    "api_key",
    "default",
    "example",
    "placeholder",
    "test",
    "xxx",
    "todo",
    "replace",
    "dummy",
    "insecure",
)


def weak_secret_reason(value: str) -> str | None:
    """Why ``value`` is not acceptable as a production secret (``None`` if it is)."""
    v = value.strip()
    if not v:
        return "is empty"
    if len(v) < MIN_SECRET_LENGTH:
        return f"is {len(v)} characters; use at least {MIN_SECRET_LENGTH}"
    low = v.lower()
    for word in _PLACEHOLDERS:
        # Short words only at the start: a random 43-character token contains "xxx" about once in 1000.
        if (word in low) if len(word) >= 5 else low.startswith(word):
            return f"contains the placeholder word {word!r}"
    if len(set(v)) < 6:
        return "has fewer than 6 distinct characters"
    return None


class Settings(BaseSettings):
    """Every knob of the policy service; each field is read from ``MANGO_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="MANGO_", extra="ignore", validate_default=True)

    api_key: SecretStr = Field(description="user key for /v1/decide and /v1/policies (X-API-Key header)")
    admin_key: SecretStr = Field(
        description="admin key for POST /v1/policies/reload; must differ from api_key"
    )
    dev_mode: bool = Field(False, description="accept weak keys (development only); never in production")

    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 inside a container")
    port: int = Field(8000, ge=0, le=65535, description="bind port (0 picks a free one)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = Field(False, description="uvicorn access log (costs ~10-20 us per request)")

    policy_dir: Path | None = Field(
        None,
        description="directory of learned policies (<name>.json + <name>.safetensors, flat or one level)",
    )
    default_policy_dir: Path | None = Field(
        DEFAULT_POLICY_DIR, description="the shipped learned default policy; '' or a missing dir disables it"
    )
    default_policy: str | None = Field(
        None,
        description="name that 'default' aliases; unset: the shipped learned policy, else fallback_policy",
    )
    fallback_policy: str = Field(
        "static", description="heuristic used when no learned default loads, and when a policy fails"
    )
    reload_in_subprocess: bool = Field(
        True,
        description="load and verify artifacts in a worker process on hot reload (keeps p99 flat); the "
        "worker starts after the service is ready",
    )
    gil_switch_interval_s: float = Field(
        0.001, gt=0.0, le=0.1, description="sys.setswitchinterval: bounds event-loop stalls during a reload"
    )

    max_body_bytes: int = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024, description="larger request bodies get 413 before parsing"
    )

    shield_loss_rise_frac: float = Field(
        0.2,
        gt=0.0,
        le=10.0,
        description="divergence: newest loss above the window's minimum by this fraction",
    )
    shield_memory_margin_frac: float = Field(
        0.05, ge=0.0, le=1.0, description="predicted state bytes x (1 + margin) must fit the memory budget"
    )
    shield_matrix_side: int = Field(
        1024, ge=8, le=1 << 20, description="typical matrix side used to estimate low-rank state bytes"
    )

    otel_telemetry: bool = Field(
        False, description="FastAPI's native OpenTelemetry spans/metrics (off: Prometheus is the export)"
    )
    bench_endpoints: bool = Field(False, description="add POST /bench/empty (benchmarks only)")

    @model_validator(mode="before")
    @classmethod
    def _empty_dir_is_none(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("policy_dir", "default_policy_dir", "default_policy"):
                if data.get(key) == "":
                    data[key] = None
        return data

    @model_validator(mode="after")
    def _secrets_are_strong(self) -> Settings:
        problems = []
        for field in ("api_key", "admin_key"):
            reason = weak_secret_reason(getattr(self, field).get_secret_value())
            if reason:
                problems.append(f"MANGO_{field.upper()} {reason}")
        if self.api_key.get_secret_value() == self.admin_key.get_secret_value():
            problems.append("MANGO_ADMIN_KEY equals MANGO_API_KEY; the admin key must differ")
        if problems and not self.dev_mode:
            raise ValueError(
                "refusing to start with weak secrets: "
                + "; ".join(problems)
                + '. Generate keys with: python -c "import secrets; print(secrets.token_urlsafe(32))" '
                "(or set MANGO_DEV_MODE=true for local development only)"
            )
        if problems:
            log.warning(
                "dev mode: accepting weak secrets (%s); never run like this in production", len(problems)
            )
        return self

    def public_dict(self) -> dict[str, Any]:
        """The settings without the secrets, for the start-up log line."""
        return self.model_dump(mode="json", exclude={"api_key", "admin_key"})
