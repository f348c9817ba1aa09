"""The LLM port and its one adapter over the openai SDK."""
