"""One exception root per package: every exception class a first-party package defines derives from
that package's root, so a caller (and the one boundary that maps errors to clients) can tell the
package's failures from a dependency's or a bug."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from action_bus.ports import ActionBusError
from agent_contracts.errors import ContractError
from agent_registry.errors import RegistryError
from bench.stack import BenchSetupError
from evaluation.errors import EvaluationError
from function_app.errors import PipelineError
from local_stack.errors import LocalStackError
from observability.errors import ObservabilityError
from streaming_gateway.errors import GatewayError

ROOTS: dict[str, type[Exception]] = {
    "agent_contracts": ContractError,
    "action_bus": ActionBusError,
    "agent_registry": RegistryError,
    "streaming_gateway": GatewayError,
    "function_app": PipelineError,
    "observability": ObservabilityError,
    "evaluation": EvaluationError,
    "local_stack": LocalStackError,
    "bench": BenchSetupError,
}
#: Packages that define no exception of their own (a new one needs a root here first).
WITHOUT_ERRORS = ("scripted_upstream", "sample_backend")


def exceptions_of(package: str) -> list[type[BaseException]]:
    """Every exception class defined in a module of `package` (entry points left out: they run on import)."""
    root = importlib.import_module(package)
    found: list[type[BaseException]] = []
    for module in pkgutil.walk_packages(root.__path__, f"{package}."):
        if module.name.endswith("__main__"):
            continue
        for _, value in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.name:
                found.append(value)
    return found


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_every_exception_derives_from_the_package_root(package: str) -> None:
    """No second root: each exception class of the package is a subclass of its one root."""
    found = exceptions_of(package)
    assert ROOTS[package] in found
    assert [f"{cls.__module__}.{cls.__name__}" for cls in found if not issubclass(cls, ROOTS[package])] == []


@pytest.mark.parametrize("package", WITHOUT_ERRORS)
def test_packages_without_a_root_define_no_exception(package: str) -> None:
    """The scripted model and the sample backend raise others' errors only."""
    assert [cls.__name__ for cls in exceptions_of(package)] == []
