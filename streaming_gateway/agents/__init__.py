"""The agent configurations the gateway serves: the model, from the registry, tool arguments."""
