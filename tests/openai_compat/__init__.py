"""OpenAI-compatibility suite: the gateway checked against OpenAI's published API description and
driven by third-party OpenAI clients (langchain-openai, litellm, curl) over real HTTP, on the shared
gateway fixtures (tests/fixtures/gateway.py)."""
