"""`make dev`'s action pipeline plan: what it starts for a given environment (nothing is started here)."""

from __future__ import annotations

from local_stack.dev import ProcessWithoutPort, action_pipeline


def test_worker_runs_last_with_local_bus_and_env_points_at_local_services() -> None:
    """Without Service Bus the worker is planned last, and the environment names the local Cosmos and backend."""
    env: dict[str, str] = {}
    services = action_pipeline(env)
    assert isinstance(services[-1], ProcessWithoutPort)
    assert services[-1].argv[1:] == ["-m", "function_app.worker"]
    assert env["COSMOS_ENDPOINT"] == "https://127.0.0.1:8081" and env["COSMOS_VERIFY_TLS"] == "false"
    assert env["TICKETS_SERVICE_URL"] == "http://127.0.0.1:8095"
    assert env["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"


def test_configured_services_are_used_not_started() -> None:
    """A given COSMOS_ENDPOINT, TICKETS_SERVICE_URL and Service Bus mean no Cosmos server, backend or worker."""
    env = {
        "COSMOS_ENDPOINT": "https://cosmos.example.com/",
        "TICKETS_SERVICE_URL": "http://tickets.internal",
        "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE": "ns.servicebus.windows.net",
    }
    names = [service.name for service in action_pipeline(env)]
    assert not {"cosmosdb-server", "sample-backend", "worker"} & set(names)
    assert env["COSMOS_ENDPOINT"] == "https://cosmos.example.com/"
