"""MANGO policy service: FastAPI on uvicorn, answering ``POST /v1/decide`` with a compression setting.

Public surface (the rest is internal):

* :func:`policy_service.main.create_app` - the app factory (``create_app(Settings(...))``);
* :class:`policy_service.config.Settings` - every knob, from ``MANGO_*`` environment variables;
* :func:`policy_service.cli.main` - ``mango serve`` (also ``python -m policy_service``);
* :class:`policy_service.launch.ServiceProcess` - the service as a child process on a free loopback port
  (the launcher of the demo, the benchmarks and the example tests);
* :class:`policy_service.registry.PolicyRegistry` and :class:`policy_service.shield.Shield` - usable alone.

Names are imported lazily so that ``mango serve`` with a bad configuration fails before FastAPI and the policy
runtime load.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PolicyRegistry", "Settings", "Shield", "create_app"]

_WHERE = {
    "create_app": "policy_service.main",
    "Settings": "policy_service.config",
    "PolicyRegistry": "policy_service.registry",
    "Shield": "policy_service.shield",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'policy_service' has no attribute {name!r}")
