"""OpenAI-compatibility suite: the gateway checked against OpenAI's published API description and
driven by third-party OpenAI clients (langchain-openai, litellm, curl) over real HTTP.

The gateway, the scripted upstream and Redis are the gateway suite's fixtures (imported, not
copied): the real app factory on a TestServer, the real upstream server, the suite's redis-server.
"""

from __future__ import annotations

from tests.gateway.conftest import gateway, gateway_env, script, start_gateway  # noqa: F401
