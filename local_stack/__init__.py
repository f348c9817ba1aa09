"""Starts and stops the local stand-ins for Azure services: used by `make dev` and the tests."""
