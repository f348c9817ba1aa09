"""Monitoring as code: the alert rules watch what they claim to, on metrics that exist, and the
workbook follows a conversation from the gateway to Cosmos DB."""

from __future__ import annotations

import json
import re

from tests.deploy.bicep import INFRA, one, resources, template, text
from tests.deploy.manifests import ROOT, find, rendered

ALERTS = INFRA / "modules" / "alerts.bicep"


def prometheus_alerts() -> dict[str, dict[str, str]]:
    rules = template(ALERTS)["variables"]["prometheusAlerts"]["value"]
    return {rule["alert"]: {k: text(v) for k, v in rule.items()} for rule in rules}


def test_dead_letters_on_either_queue_alert() -> None:
    """A metric alert fires on any dead-lettered message on `actions` or `action-updates`."""
    alert = next(a for a in resources("Microsoft.Insights/metricAlerts") if a.symbol == "deadLetters")
    criterion = alert.properties["criteria"]["allOf"][0]
    assert criterion["metricName"] == "DeadletteredMessages"
    assert (criterion["operator"], criterion["threshold"], criterion["timeAggregation"]) == (
        "GreaterThan",
        0,
        "Maximum",
    )
    assert text(criterion["dimensions"][0]["values"]) == "[queues.actions, queues.updates]"
    assert text(alert.properties["scopes"]) == "[servicebusId]"


def test_failed_orchestrations_alert() -> None:
    """A log alert counts orchestrator failures reported by the Durable Functions extension."""
    rule = one("Microsoft.Insights/scheduledQueryRules")
    query = rule.properties["criteria"]["allOf"][0]["query"]
    assert "Host.Triggers.DurableTask" in query and "failed" in query
    assert rule.properties["criteria"]["allOf"][0]["threshold"] == 0


def test_prometheus_alerts_cover_5xx_ttft_redis_memory_and_restarts() -> None:
    """One rule each for the gateway's 5xx rate, p95 time to first token, Redis memory and pod restarts."""
    alerts = prometheus_alerts()
    assert set(alerts) == {"GatewayHigh5xxRate", "GatewaySlowFirstToken", "RedisMemoryHigh", "PodRestarts"}
    assert 'response_code=~"5.."' in alerts["GatewayHigh5xxRate"]["expression"]
    assert "histogram_quantile(0.95" in alerts["GatewaySlowFirstToken"]["expression"]
    assert 'container="redis"' in alerts["RedisMemoryHigh"]["expression"]
    assert "kube_pod_container_status_restarts_total" in alerts["PodRestarts"]["expression"]


def test_gateway_metrics_in_alerts_exist_in_the_gateway() -> None:
    """Every gateway_* metric an alert queries is one the gateway defines (a histogram adds _bucket)."""
    sources = "\n".join(p.read_text() for p in (ROOT / "streaming_gateway").rglob("*.py"))
    for alert in prometheus_alerts().values():
        for metric in re.findall(r"\b(gateway_[a-z_]+?)(?:_bucket)?\{", alert["expression"]):
            assert f'"{metric}"' in sources, metric


def test_redis_memory_alert_fires_before_redis_refuses_writes() -> None:
    """The alert's fraction of the container limit is below maxmemory's fraction of that limit (noeviction)."""
    expression = prometheus_alerts()["RedisMemoryHigh"]["expression"]
    alert_fraction = re.search(r"> ([0-9.]+)$", expression)
    assert alert_fraction, expression
    threshold = float(alert_fraction.group(1))
    for overlay in ("dev", "prod"):
        manifests = rendered(overlay)
        redis = find(manifests, "StatefulSet", "redis")[0]
        limit = redis["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        conf = next(
            m["data"]["redis.conf"] for m in find(manifests, "ConfigMap") if "redis.conf" in m.get("data", {})
        )
        maxmemory_line = re.search(r"^maxmemory (\d+)mb$", conf, re.M)
        assert maxmemory_line, conf
        maxmemory = maxmemory_line.group(1)
        limit_mib = (
            int(limit.removesuffix("Gi")) * 1024 if limit.endswith("Gi") else int(limit.removesuffix("Mi"))
        )
        assert threshold < int(maxmemory) / limit_mib, overlay


def test_every_alert_notifies_the_action_group() -> None:
    """Metric, log and Prometheus alerts all send to the one action group."""
    for alert in resources("Microsoft.Insights/metricAlerts"):
        assert text(alert.properties["actions"]) == "[{actionGroupId: actionGroupId}]", alert.where
    assert (
        text(one("Microsoft.Insights/scheduledQueryRules").properties["actions"])
        == "{actionGroups: [actionGroupId]}"
    )
    rules = one("Microsoft.AlertsManagement/prometheusRuleGroups").properties["rules"]
    assert "actionGroupId" in text(rules)
    assert (
        text(one("Microsoft.AlertsManagement/prometheusRuleGroups").properties["scopes"])
        == "[monitorWorkspaceId, clusterId]"
    )


def test_workbook_follows_a_conversation_from_gateway_to_cosmos() -> None:
    """The workbook takes a conversation id and queries its requests, dependencies (Cosmos writes among them) and logs."""
    workbook = one("Microsoft.Insights/workbooks")
    assert "workbook.json" in text(workbook.properties["serializedData"])
    assert text(workbook.properties["sourceId"]) == "appInsightsId"
    content = json.loads((INFRA / "modules" / "workbook.json").read_text())
    parameters = [p for item in content["items"] if item["type"] == 9 for p in item["content"]["parameters"]]
    assert "ConversationId" in {p["name"] for p in parameters}
    queries = [item["content"]["query"] for item in content["items"] if item["type"] == 3]
    joined = "\n".join(queries)
    assert "{ConversationId}" in joined
    assert "agent.conversation_id" in joined and "requests" in joined and "dependencies" in joined
    assert any("DocumentDB" in q or "cosmos" in q for q in queries)


def test_workbook_keys_match_what_the_gateway_records() -> None:
    """The span attribute and log field the workbook filters on are the ones the code writes."""
    gateway = "\n".join(p.read_text() for p in (ROOT / "streaming_gateway").rglob("*.py"))
    observability = "\n".join(p.read_text() for p in (ROOT / "observability").rglob("*.py"))
    assert '"agent.conversation_id"' in gateway
    assert '"conversation_id"' in observability


def test_every_service_sends_diagnostics() -> None:
    """Each service with control- or data-plane logs has a diagnostic setting scoped to it."""
    scoped = {
        (s.path.name, text(s.body["scope"])) for s in resources("Microsoft.Insights/diagnosticSettings")
    }
    expected = {
        ("aks.bicep", "cluster"),
        ("apim.bicep", "service"),
        ("cosmos.bicep", "account"),
        ("functions.bicep", "app"),
        ("keyvault.bicep", "vault"),
        ("keyvault.bicep", "caVault"),
        ("messaging.bicep", "namespace"),
        ("openai.bicep", "account"),
        ("registry.bicep", "registry"),
        ("redis-managed.bicep", "database"),
    }
    assert expected <= scoped, expected - scoped
    aks = next(s for s in resources("Microsoft.Insights/diagnosticSettings") if s.path.name == "aks.bicep")
    assert {log["category"] for log in aks.properties["logs"]} >= {"kube-audit-admin", "guard"}


def test_diagnostic_settings_go_to_the_workspace() -> None:
    """Every diagnostic setting sends to the Log Analytics workspace passed in."""
    for setting in resources("Microsoft.Insights/diagnosticSettings"):
        assert text(setting.properties["workspaceId"]) == "logAnalyticsId", setting.where
