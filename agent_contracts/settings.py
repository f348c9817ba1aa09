"""Helpers to read settings from the environment once, failing with a line naming the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlparse


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"setting {name}: {problem}")
        self.name = name
        self.problem = problem


class Env:
    """Typed reads from an environment mapping (os.environ unless given)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def str(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            if required:
                raise SettingsError(name, "is required and not set")
            return default
        return value.strip()

    def int(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        raw = self.str(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(name, f"expected an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(name, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise SettingsError(name, f"must be at most {maximum}, got {value}")
        return value

    def float(self, name: str, default: float, *, minimum: float | None = None) -> float:
        raw = self.str(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(name, f"expected a number, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(name, f"must be at least {minimum}, got {value}")
        return value

    def bool(self, name: str, default: bool) -> bool:
        raw = self.str(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(name, f"expected true or false, got {raw!r}")

    def url(self, name: str, default: str | None = None, *, schemes: tuple[str, ...] = ("http", "https"), required: bool = False) -> str | None:
        raw = self.str(name, default, required=required)
        if raw is None:
            return None
        parsed = urlparse(raw)
        if parsed.scheme not in schemes or not parsed.netloc:
            raise SettingsError(name, f"expected a {'/'.join(schemes)} URL, got {raw!r}")
        return raw

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.str(name, default)
        assert raw is not None
        if raw not in choices:
            raise SettingsError(name, f"expected one of {', '.join(choices)}, got {raw!r}")
        return raw
