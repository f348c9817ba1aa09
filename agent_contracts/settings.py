"""Helpers to read settings from the environment once, failing with a line naming the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeAlias, overload
from urllib.parse import urlparse

from agent_contracts.errors import ContractError

# The reader's methods are named after the types they return; these aliases keep the builtins
# reachable in its annotations.
_str: TypeAlias = str
_int: TypeAlias = int
_float: TypeAlias = float
_bool: TypeAlias = bool


class SettingsError(ContractError, ValueError):
    """A setting is missing or malformed; the message names the variable."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"setting {name}: {problem}")
        self.name = name
        self.problem = problem


class Env:
    """Typed reads from an environment mapping (os.environ unless given)."""

    def __init__(self, environ: Mapping[_str, _str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    @overload
    def str(self, name: _str, default: _str, *, required: _bool = False) -> _str: ...
    @overload
    def str(self, name: _str, default: None = None, *, required: _bool = False) -> _str | None: ...
    def str(self, name: _str, default: _str | None = None, *, required: _bool = False) -> _str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            if required:
                raise SettingsError(name, "is required and not set")
            return default
        return value.strip()

    def int(
        self, name: _str, default: _int, *, minimum: _int | None = None, maximum: _int | None = None
    ) -> _int:
        raw = self.str(name)
        if raw is None:
            return default
        try:
            value = _int(raw)
        except ValueError:
            raise SettingsError(name, f"expected an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(name, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise SettingsError(name, f"must be at most {maximum}, got {value}")
        return value

    def float(self, name: _str, default: _float, *, minimum: _float | None = None) -> _float:
        raw = self.str(name)
        if raw is None:
            return default
        try:
            value = _float(raw)
        except ValueError:
            raise SettingsError(name, f"expected a number, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(name, f"must be at least {minimum}, got {value}")
        return value

    def bool(self, name: _str, default: _bool) -> _bool:
        raw = self.str(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(name, f"expected true or false, got {raw!r}")

    @overload
    def url(
        self,
        name: _str,
        default: _str,
        *,
        schemes: tuple[_str, ...] = ("http", "https"),
        required: _bool = False,
    ) -> _str: ...
    @overload
    def url(
        self,
        name: _str,
        default: None = None,
        *,
        schemes: tuple[_str, ...] = ("http", "https"),
        required: _bool = False,
    ) -> _str | None: ...
    def url(
        self,
        name: _str,
        default: _str | None = None,
        *,
        schemes: tuple[_str, ...] = ("http", "https"),
        required: _bool = False,
    ) -> _str | None:
        raw = self.str(name, default, required=required)
        if raw is None:
            return None
        parsed = urlparse(raw)
        if parsed.scheme not in schemes or not parsed.netloc:
            raise SettingsError(name, f"expected a {'/'.join(schemes)} URL, got {raw!r}")
        return raw

    def choice(self, name: _str, default: _str, choices: tuple[_str, ...]) -> _str:
        raw = self.str(name, default)
        if raw not in choices:
            raise SettingsError(name, f"expected one of {', '.join(choices)}, got {raw!r}")
        return raw
