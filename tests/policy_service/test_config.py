"""Settings refuse weak secrets unless dev mode is explicitly on; ``mango serve`` exits 2 saying why."""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest
from pydantic import ValidationError

from policy_service.api.deps import KeyDigests
from policy_service.cli import main as serve_main
from policy_service.config import Settings, weak_secret_reason

from .conftest import ROOT

STRONG_USER = secrets.token_urlsafe(32)
STRONG_ADMIN = secrets.token_urlsafe(32)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MANGO_API_KEY", "MANGO_ADMIN_KEY", "MANGO_DEV_MODE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("changeme", "characters"),
        ("changeme-changeme-changeme", "placeholder word 'changeme'"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("short-Key-1", "characters"),
        ("my-Secret-Value-2026!", "placeholder word 'secret'"),
        ("aaaaaaaaaaaaaaaaaaaaaaaa", "distinct"),
    ],
)
def test_weak_secrets_refused_with_clear_message(value: str, why: str) -> None:
    assert why in (weak_secret_reason(value) or "")
    with pytest.raises(ValidationError) as err:
        Settings(api_key=value, admin_key=STRONG_ADMIN)
    msg = str(err.value)
    assert "MANGO_API_KEY" in msg and why in msg and "secrets.token_urlsafe" in msg


def test_strong_secrets_accepted_and_never_shown() -> None:
    s = Settings(api_key=STRONG_USER, admin_key=STRONG_ADMIN)
    assert s.dev_mode is False
    assert STRONG_USER not in repr(s) and STRONG_USER not in str(s.public_dict())
    assert weak_secret_reason(secrets.token_urlsafe(32)) is None


def test_admin_key_must_differ_and_is_required() -> None:
    with pytest.raises(ValidationError, match="must differ"):
        Settings(api_key=STRONG_USER, admin_key=STRONG_USER)
    with pytest.raises(ValidationError, match="admin_key"):
        Settings(api_key=STRONG_USER)  # type: ignore[call-arg]


def test_dev_mode_must_be_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(api_key="changeme", admin_key="changeme2", dev_mode=True)
    assert s.dev_mode
    monkeypatch.setenv("MANGO_API_KEY", "changeme")
    monkeypatch.setenv("MANGO_ADMIN_KEY", "changeme")
    with pytest.raises(ValidationError, match="weak secrets"):
        Settings()  # type: ignore[call-arg]
    monkeypatch.setenv("MANGO_DEV_MODE", "true")
    assert Settings().dev_mode  # type: ignore[call-arg]


def test_env_prefix_and_knobs(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("MANGO_API_KEY", STRONG_USER)
    monkeypatch.setenv("MANGO_ADMIN_KEY", STRONG_ADMIN)
    monkeypatch.setenv("MANGO_MAX_BODY_BYTES", "100000")
    monkeypatch.setenv("MANGO_POLICY_DIR", "")
    s = Settings()  # type: ignore[call-arg]
    assert s.max_body_bytes == 100_000 and s.policy_dir is None
    assert s.api_key.get_secret_value() == STRONG_USER


def test_serve_refuses_placeholder_secret_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MANGO_API_KEY", "changeme")
    monkeypatch.setenv("MANGO_ADMIN_KEY", STRONG_ADMIN)
    assert serve_main(["--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err and "MANGO_API_KEY" in err and "MANGO_DEV_MODE" in err


def test_serve_names_missing_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve_main([]) == 2
    err = capsys.readouterr().err
    assert "set MANGO_API_KEY" in err and "set MANGO_ADMIN_KEY" in err


def test_mango_serve_command_exits_2_on_placeholder_secret() -> None:
    env = {"PATH": "/usr/bin:/bin", "MANGO_API_KEY": "changeme", "MANGO_ADMIN_KEY": "changeme"}
    proc = subprocess.run(
        [sys.executable, "-m", "mango_cli", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "refusing to start with weak secrets" in proc.stderr


@pytest.mark.parametrize("long_keys", [False, True])
def test_key_roles_need_the_exact_key(long_keys: bool) -> None:
    """The padded constant-time comparison: prefixes, extensions (NUL padding included), another key's
    bytes and keys longer than the pad length all fail; each key gets exactly its role."""
    user = secrets.token_urlsafe(200 if long_keys else 32)  # 267 bytes: longer than the 256-byte pad
    admin = secrets.token_urlsafe(32)
    digests = KeyDigests.from_settings(Settings(api_key=user, admin_key=admin))
    assert digests.pad >= len(user)
    assert digests.role(user) == "user"
    assert digests.role(admin) == "admin"
    for wrong in (
        user[:-1],
        user + "x",
        user + "\0",
        user + "\0" * 300,
        admin[:-1],
        admin + "\0",
        "",
        "x" * 400,
    ):
        assert digests.role(wrong) is None, wrong[:20]
