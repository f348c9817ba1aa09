"""The action bus: how accepted actions travel from the gateway to the pipeline, and how status
updates travel back. Ports here; one adapter per backend (Azure Service Bus, local Redis Streams).
"""
