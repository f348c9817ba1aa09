// Service Bus: `actions` (gateway -> function app) and `action-updates` (function app -> gateway).
// Duplicate detection can only be chosen when a queue is created, so it is on from the first
// deployment: a message the gateway's outbox sends twice (same MessageId) is delivered once.
// Local auth is off: every client authenticates with its managed identity, and each identity
// only sends or receives on the queue it needs.
param location string
param tags object
param name string
param profile string
param queues object
param gatewayPrincipalId string
param functionsPrincipalId string
param logAnalyticsId string

@description('How long Service Bus remembers a MessageId; an outbox retry later than this would be delivered again.')
param duplicateWindow string = 'PT10M'

var roles = {
  sender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  receiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
}

// lockDuration bounds how long a crashed receiver holds a message; the function app's host renews
// the lock while it works (host.json maxAutoLockRenewalDuration). After maxDeliveryCount failed
// deliveries, or at expiry, a message moves to the dead-letter queue, where the alert sees it.
var queueSettings = {
  '${queues.actions}': { lockDuration: 'PT1M', maxDeliveryCount: 10, defaultMessageTimeToLive: 'P1D' }
  '${queues.updates}': { lockDuration: 'PT30S', maxDeliveryCount: 10, defaultMessageTimeToLive: 'PT1H' }
}

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: profile == 'prod' ? { name: 'Premium', tier: 'Premium', capacity: 1 } : { name: 'Standard', tier: 'Standard' }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    zoneRedundant: profile == 'prod'
  }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = [for queueName in [queues.actions, queues.updates]: {
  parent: namespace
  name: queueName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateWindow
    requiresSession: false
    lockDuration: queueSettings[queueName].lockDuration
    maxDeliveryCount: queueSettings[queueName].maxDeliveryCount
    defaultMessageTimeToLive: queueSettings[queueName].defaultMessageTimeToLive
    deadLetteringOnMessageExpiration: true
    enableBatchedOperations: true
  }
}]

// queue[0] is `actions`, queue[1] is `action-updates`.
var grants = [
  { queue: 0, principalId: gatewayPrincipalId, role: roles.sender }
  { queue: 1, principalId: gatewayPrincipalId, role: roles.receiver }
  { queue: 0, principalId: functionsPrincipalId, role: roles.receiver }
  { queue: 1, principalId: functionsPrincipalId, role: roles.sender }
]

resource queueRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for grant in grants: {
  name: guid(queue[grant.queue].id, grant.principalId, grant.role)
  scope: queue[grant.queue]
  properties: {
    principalId: grant.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.role)
  }
}]

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: namespace
  properties: {
    workspaceId: logAnalyticsId
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output id string = namespace.id
output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
