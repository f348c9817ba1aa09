// The container registry: the gateway image (built here by `azd deploy`, tagged per build) and
// the imported Redis image. No admin user, no anonymous pull: the kubelet identity pulls (AcrPull,
// modules/aks.bicep).
param location string
param tags object
param name string
param profile string
param logAnalyticsId string

resource registry 'Microsoft.ContainerRegistry/registries@2025-11-01' = {
  name: name
  location: location
  tags: tags
  sku: { name: profile == 'prod' ? 'Premium' : 'Standard' }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
    zoneRedundancy: profile == 'prod' ? 'Enabled' : 'Disabled'
    policies: {
      retentionPolicy: profile == 'prod' ? { days: 30, status: 'enabled' } : null
    }
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: registry
  properties: {
    workspaceId: logAnalyticsId
    logs: [{ categoryGroup: 'audit', enabled: true }]
  }
}

output name string = registry.name
output id string = registry.id
output loginServer string = registry.properties.loginServer
