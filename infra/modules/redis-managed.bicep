// Azure Managed Redis, the clustered choice (main.bicep: redisHosting = 'managed'): zone-redundant
// (high availability places primary and replica shards in different zones), patched by the
// service, TLS only, the OSS cluster policy so redis-py's cluster client talks to the shards
// directly (REDIS_MODE=cluster; discovery on 10000, shards on 8500-8599; every multi-key command of
// the code stays in one hash slot). AOF persistence every second and `NoEviction`, as the
// in-cluster Redis runs. The gateway reads the whole URL from the Key Vault secret `redis-url`
// (aks/components/azure-managed-redis); the key never leaves the deployment (no output).
// Authentication is by access key: the services' Redis client has no Entra ID token provider yet.
param location string
param tags object
param name string
param profile string
param keyVaultName string
param logAnalyticsId string
param actionGroupId string

@description('Size per profile; Balanced_B* are general purpose. `az redisenterprise list-skus-for-scaling` lists the sizes one can move to.')
param skus object = { dev: 'Balanced_B1', prod: 'Balanced_B20' }

@description('Alert when the cache uses more than this percentage of its memory (writes fail at maxmemory under NoEviction).')
param memoryAlertPercent int = 65

resource cluster 'Microsoft.Cache/redisEnterprise@2025-07-01' = {
  name: name
  location: location
  tags: tags
  sku: { name: skus[profile] }
  properties: {
    highAvailability: 'Enabled'
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' = {
  parent: cluster
  name: 'default'
  properties: {
    clientProtocol: 'Encrypted'
    port: 10000
    clusteringPolicy: 'OSSCluster'
    evictionPolicy: 'NoEviction'
    persistence: { aofEnabled: true, aofFrequency: '1s' }
    accessKeysAuthentication: 'Enabled'
    deferUpgrade: 'NotDeferred'
  }
}

resource vault 'Microsoft.KeyVault/vaults@2026-02-01' existing = {
  name: keyVaultName
}

// Database 0 is the only one on a cluster; the key is URL-encoded (it may hold '/', '+', '=').
resource redisUrl 'Microsoft.KeyVault/vaults/secrets@2025-05-01' = {
  parent: vault
  name: 'redis-url'
  properties: {
    value: 'rediss://:${uriComponent(database.listKeys().primaryKey)}@${cluster.properties.hostName}:${database.properties.port}/0'
    contentType: 'text/plain'
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: database
  properties: {
    workspaceId: logAnalyticsId
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
  }
}

resource memoryAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-${name}-memory'
  location: 'global'
  tags: tags
  properties: {
    description: 'Azure Managed Redis uses more than ${memoryAlertPercent}% of its memory; writes fail at maxmemory (NoEviction).'
    severity: 2
    enabled: true
    scopes: [cluster.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'used-memory'
          metricName: 'usedmemorypercentage'
          metricNamespace: 'Microsoft.Cache/redisEnterprise'
          operator: 'GreaterThan'
          threshold: memoryAlertPercent
          timeAggregation: 'Maximum'
        }
      ]
    }
    actions: [{ actionGroupId: actionGroupId }]
  }
}

output hostName string = cluster.properties.hostName
output port int = database.properties.port
output urlSecretName string = redisUrl.name
