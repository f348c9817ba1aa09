"""Chat turns: the engine that streams the model into the log, actions, and continuations."""
