// Alert rules, all notifying the action group:
// - Service Bus: any dead-lettered message on either queue (metric alert);
// - failed orchestrations, from the function app's Durable Functions logs (log alert);
// - gateway 5xx rate, time to first token p95, Redis memory, pod restarts (Prometheus rules over
//   the Azure Monitor workspace the cluster sends to).
param location string
param tags object
param prefix string
param actionGroupId string
param servicebusId string
param queues object
param appInsightsId string
param monitorWorkspaceId string
param clusterId string
param clusterName string
param namespace string

@description('Alert when the p95 time to first token is above this many seconds.')
param ttftP95Seconds int = 5
@description('Alert when more than this fraction of gateway responses are 5xx.')
param gateway5xxRatio string = '0.05'

resource deadLetters 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-${prefix}-servicebus-dead-letters'
  location: 'global'
  tags: tags
  properties: {
    description: 'A message was dead-lettered on ${queues.actions} or ${queues.updates}: see `python -m function_app.deadletters`.'
    severity: 2
    enabled: true
    scopes: [servicebusId]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'dead-lettered'
          metricName: 'DeadletteredMessages'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          dimensions: [{ name: 'EntityName', operator: 'Include', values: [queues.actions, queues.updates] }]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    actions: [{ actionGroupId: actionGroupId }]
  }
}

resource failedOrchestrations 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${prefix}-failed-orchestrations'
  location: location
  tags: tags
  properties: {
    displayName: 'Failed action orchestrations'
    description: 'An orchestration of the action pipeline failed (Durable Functions reported it).'
    severity: 2
    enabled: true
    scopes: [appInsightsId]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'traces | where customDimensions.Category == "Host.Triggers.DurableTask" | where message has "(Orchestrator)" and message has "failed"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: { actionGroups: [actionGroupId] }
  }
}

var prometheusAlerts = [
  {
    alert: 'GatewayHigh5xxRate'
    severity: 2
    expression: 'sum(rate(istio_requests_total{reporter="destination", destination_workload="streaming-gateway", response_code=~"5.."}[5m])) / sum(rate(istio_requests_total{reporter="destination", destination_workload="streaming-gateway"}[5m])) > ${gateway5xxRatio}'
    description: 'More than ${gateway5xxRatio} of gateway responses are 5xx.'
  }
  {
    alert: 'GatewaySlowFirstToken'
    severity: 3
    expression: 'histogram_quantile(0.95, sum by (le) (rate(gateway_time_to_first_token_seconds_bucket{namespace="${namespace}"}[10m]))) > ${ttftP95Seconds}'
    description: 'p95 time to first token is above ${ttftP95Seconds} s.'
  }
  {
    // Redis refuses writes at maxmemory (noeviction, about 75% of its limit): warn before that.
    alert: 'RedisMemoryHigh'
    severity: 2
    expression: 'max(container_memory_working_set_bytes{namespace="${namespace}", container="redis"}) / max(kube_pod_container_resource_limits{namespace="${namespace}", container="redis", resource="memory"}) > 0.65'
    description: 'Redis uses more than 65% of its memory limit; writes stop at maxmemory.'
  }
  {
    alert: 'PodRestarts'
    severity: 3
    expression: 'sum by (pod) (increase(kube_pod_container_status_restarts_total{namespace="${namespace}"}[15m])) > 2'
    description: 'A pod in ${namespace} restarted more than twice in 15 minutes.'
  }
]

resource prometheusRules 'Microsoft.AlertsManagement/prometheusRuleGroups@2023-03-01' = {
  name: 'prom-${prefix}-alerts'
  location: location
  tags: tags
  properties: {
    description: 'Agent platform alerts on managed Prometheus metrics.'
    scopes: [monitorWorkspaceId, clusterId]
    clusterName: clusterName
    enabled: true
    interval: 'PT1M'
    rules: [for rule in prometheusAlerts: {
      alert: rule.alert
      expression: rule.expression
      severity: rule.severity
      enabled: true
      for: 'PT5M'
      labels: { namespace: namespace }
      annotations: { description: rule.description }
      resolveConfiguration: { autoResolved: true, timeToResolve: 'PT10M' }
      actions: [{ actionGroupId: actionGroupId }]
    }]
  }
}
