"""The servers some tests need (PostgreSQL, RabbitMQ, Redis) and what to do when one is missing.

A developer's machine may have none of them, so by default a test whose server is unreachable is
skipped with the reason. CI sets ``META_PIPELINE_REQUIRE_SERVICES=1`` (``.ci/run``): there a missing
server is a failure, so a broken service never turns the tests that prove scale-out into silent skips.
"""

from __future__ import annotations

import os
import socket

import pytest

REQUIRE_SERVICES_ENV = "META_PIPELINE_REQUIRE_SERVICES"


def services_required() -> bool:
    """Whether an unreachable server fails the test instead of skipping it."""
    return os.environ.get(REQUIRE_SERVICES_ENV, "").strip() == "1"


def service_unavailable(reason: str) -> None:
    """Skip the current test because of ``reason``, or fail it when services are required."""
    if services_required():
        pytest.fail(f"{reason} ({REQUIRE_SERVICES_ENV}=1: a missing server is a failure)", pytrace=False)
    pytest.skip(f"{reason} (set {REQUIRE_SERVICES_ENV}=1 to make this a failure)")


def require_service(host: str, port: int, name: str, *, timeout: float = 2.0) -> None:
    """Return if something accepts TCP connections at ``host``:``port``; otherwise skip the test (or
    fail it, see :func:`services_required`). ``name`` says which server, for the reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        reason = f"{name} is not reachable at {host}:{port}: {exc}"
    service_unavailable(reason)
