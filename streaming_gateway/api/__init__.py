"""HTTP, SSE and WebSocket: routes, request models, middlewares and the API description."""
