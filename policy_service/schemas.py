"""Response models of the service's own endpoints (the decide contract lives in ``client.protocol``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["ErrorMessage", "Health", "PolicyInfo", "PolicyList", "ReloadResult"]


class ErrorMessage(BaseModel):
    """Every error except 422 (whose ``detail`` is the list of failing fields, ``HTTPValidationError``)."""

    detail: str = Field(description="what is wrong and how to fix it")


class Health(BaseModel):
    status: Literal["ok", "loading"]
    generation: int = Field(0, description="policy snapshot generation (0 before the first load)")
    reloader: Literal["off", "stopped", "starting", "up", "failed"] = Field(
        "off",
        description="the hot-reload loader process: it starts after the service is ready (readiness never "
        "waits for it); 'off' without MANGO_RELOAD_IN_SUBPROCESS",
    )


class PolicyInfo(BaseModel):
    name: str
    kind: Literal["learned", "heuristic"]
    version: str
    details: dict[str, Any] = Field(default_factory=dict, description="manifest facts of a learned policy")


class PolicyList(BaseModel):
    default: str = Field(description="the policy that 'default' answers with")
    fallback: str = Field(description="heuristic used when a policy fails")
    generation: int
    policies: list[PolicyInfo]
    errors: dict[str, str] = Field(description="artifacts that did not load, by file")


class ReloadResult(BaseModel):
    generation: int
    learned: dict[str, str] = Field(description="learned policy name -> version now served")
    reused: list[str] = Field(description="learned policies whose files had not changed")
    default: str
    errors: dict[str, str]
    duration_s: float
