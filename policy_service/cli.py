"""``mango serve``: run the policy service on uvicorn (one process; scale with replicas, it is stateless).

Flags override the ``MANGO_*`` environment (see :mod:`policy_service.config`)::

    MANGO_API_KEY=... MANGO_ADMIN_KEY=... mango serve --host 0.0.0.0 --port 8000 --policy-dir /policies
    mango serve --dev            # local development: weak keys accepted (still required)

Exit status 2 with a message naming each bad setting when the configuration is invalid.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Literal

import tyro
from pydantic import ValidationError

from .config import Settings

__all__ = ["ServeArgs", "main"]

log = logging.getLogger("policy_service")


@dataclass
class ServeArgs:
    """Run the MANGO policy service (uvicorn). A flag left out keeps its MANGO_* environment value."""

    host: str | None = None
    """bind address (MANGO_HOST, default 127.0.0.1)"""
    port: int | None = None
    """bind port (MANGO_PORT, default 8000)"""
    dev: bool = False
    """development mode: accept weak keys (MANGO_DEV_MODE); never in production"""
    policy_dir: str | None = None
    """directory of learned policy artifacts (MANGO_POLICY_DIR)"""
    log_level: Literal["critical", "error", "warning", "info", "debug"] | None = None
    """log level (MANGO_LOG_LEVEL, default info)"""
    access_log: bool = False
    """uvicorn access log (MANGO_ACCESS_LOG)"""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(
        ServeArgs,
        args=sys.argv[1:] if argv is None else argv,
        prog="mango serve",
        description=ServeArgs.__doc__,
    )
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "host": args.host,
            "port": args.port,
            "policy_dir": args.policy_dir,
            "log_level": args.log_level,
            "access_log": args.access_log or None,
        }.items()
        if v is not None
    }
    if args.dev:
        overrides["dev_mode"] = True
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            + (" (set MANGO_" + str(e["loc"][0]).upper() + ")" if e["type"] == "missing" and e["loc"] else "")
            for e in exc.errors()
        ]
        print("mango serve: invalid configuration:\n" + "\n".join(lines), file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log.info("starting uvicorn on %s:%s", settings.host, settings.port)

    import uvicorn  # imported late: a bad configuration fails before fastapi loads

    from .main import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        log_config=None,  # keep the logging configured above
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        lifespan="on",
        workers=1,
    )
    uvicorn.Server(config).run()
    return 0
