"""The suite's shared fixtures, one plugin module each, visible to every test without imports.

The suite never uses the machine's own Redis (another project's data may live there): it starts
its own redis-server, flushed before each test (tests/fixtures/services.py).
"""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.gateway",
    "tests.fixtures.gateway_process",
    "tests.fixtures.function_app",
    "tests.fixtures.evaluation",
    "tests.fixtures.browser",
]
