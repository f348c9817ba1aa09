// Cosmos DB for NoSQL: database `agent` with `action_results` (one document per action,
// partitioned by conversation) and `dead_letters` (the dead-letter index, one logical partition
// per day). Keys are off (disableLocalAuth): the function app's identity writes through the
// built-in data-plane role, scoped to the database.
param location string
param tags object
param name string
param profile string
param functionsPrincipalId string
param logAnalyticsId string

param databaseName string = 'agent'

var containers = [
  { name: 'action_results', partitionKey: '/conversationId' }
  { name: 'dead_letters', partitionKey: '/partition' }
]
// Cosmos DB Built-in Data Contributor (a data-plane role, not an Azure RBAC role).
var dataContributor = '00000000-0000-0000-0000-000000000002'

resource account 'Microsoft.DocumentDB/databaseAccounts@2025-04-15' = {
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: { defaultConsistencyLevel: 'Session' }
    locations: [{ locationName: location, failoverPriority: 0, isZoneRedundant: profile == 'prod' }]
    // Serverless in dev costs nothing at idle; prod gets provisioned autoscale throughput.
    capabilities: profile == 'prod' ? [] : [{ name: 'EnableServerless' }]
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
    backupPolicy: { type: 'Continuous', continuousModeProperties: { tier: 'Continuous7Days' } }
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2025-04-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: { id: databaseName }
    options: profile == 'prod' ? { autoscaleSettings: { maxThroughput: 1000 } } : {}
  }
}

resource container 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2025-04-15' = [for spec in containers: {
  parent: database
  name: spec.name
  properties: {
    resource: {
      id: spec.name
      partitionKey: { paths: [spec.partitionKey], kind: 'Hash', version: 2 }
      indexingPolicy: { indexingMode: 'consistent', automatic: true }
    }
  }
}]

resource functionsData 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2025-04-15' = {
  parent: account
  name: guid(account.id, functionsPrincipalId, dataContributor)
  properties: {
    principalId: functionsPrincipalId
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${dataContributor}'
    scope: '${account.id}/dbs/${databaseName}'
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: account
  properties: {
    workspaceId: logAnalyticsId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      { category: 'DataPlaneRequests', enabled: true }
      { category: 'ControlPlaneRequests', enabled: true }
    ]
  }
}

output endpoint string = account.properties.documentEndpoint
output database string = database.name
output containers array = containers
