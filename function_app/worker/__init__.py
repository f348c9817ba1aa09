"""The local worker: the function app's own orchestrator and activities, run without the Functions
host against the Redis Streams broker, by driving the orchestrator through the Durable SDK's replay
protocol as the host does (history in Redis, activity completions appended, timers honoured).
"""
