"""Project-wide fixtures: the vendor fakes and a guard that keeps tests on loopback."""

from __future__ import annotations

pytest_plugins = ["tests.fakes.pytest_plugin", "tests.redis_fixture"]
