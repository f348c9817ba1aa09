"""The streaming gateway: authenticated chat streamed over WebSocket, SSE and an OpenAI-compatible API."""
