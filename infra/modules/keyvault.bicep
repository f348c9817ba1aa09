// Key Vault, RBAC only. Roles: the deploying identity administers it (with the principal type it
// really has: a person is `User`, a pipeline `ServicePrincipal`; Azure rejects a mismatch), the
// workloads read secrets, the certificate script writes certificates and the Redis password.
// The Application Insights connection string is kept here so pods read it through the CSI driver.
param location string
param tags object
param name string
@description('The vault that holds only the private CA of the ingress certificates; the certificate script alone reads it.')
param caName string
param principalId string
param principalType string
@description('Principal ids of workload identities that read secrets.')
param secretReaders array
param certificateWriterPrincipalId string
@secure()
param appInsightsConnectionString string
param logAnalyticsId string
@description('Where the certificate expiry alert goes.')
param actionGroupId string

var roles = {
  administrator: '00482a5a-887f-4fb3-b363-3baf46a0f4a3'
  secretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  certificatesOfficer: 'a4417e6f-fecd-4de8-b567-7b0420556985'
  secretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
}

resource vault 'Microsoft.KeyVault/vaults@2026-02-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource admin 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(vault.id, principalId, roles.administrator)
  scope: vault
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.administrator)
  }
}

resource readers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for reader in secretReaders: {
  name: guid(vault.id, reader, roles.secretsUser)
  scope: vault
  properties: {
    principalId: reader
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.secretsUser)
  }
}]

resource certificateWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [roles.certificatesOfficer, roles.secretsOfficer]: {
  name: guid(vault.id, certificateWriterPrincipalId, role)
  scope: vault
  properties: {
    principalId: certificateWriterPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource appInsightsSecret 'Microsoft.KeyVault/vaults/secrets@2025-05-01' = {
  parent: vault
  name: 'appinsights-connection-string'
  properties: {
    value: appInsightsConnectionString
    contentType: 'text/plain'
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsId
    logs: [{ categoryGroup: 'audit', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

// The CA's key is kept apart: every workload identity reads secrets of the main vault, and none of
// them may mint a certificate the ingress or APIM would trust.
resource caVault 'Microsoft.KeyVault/vaults@2026-02-01' = {
  name: caName
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource caWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(caVault.id, certificateWriterPrincipalId, roles.secretsOfficer)
  scope: caVault
  properties: {
    principalId: certificateWriterPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.secretsOfficer)
  }
}

resource caDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: caVault
  properties: {
    workspaceId: logAnalyticsId
    logs: [{ categoryGroup: 'audit', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

// Key Vault raises CertificateNearExpiry 30 days before a certificate expires. The ingress and APIM
// certificates are issued again by any provision within 90 days of expiry (modules/certificates.bicep),
// so this fires only when nobody provisioned in the two months before: run `azd provision`.
resource vaultEvents 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: 'evgt-${name}'
  location: location
  tags: tags
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

resource expiryAlert 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: vaultEvents
  name: 'certificate-expiry'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    filter: {
      includedEventTypes: ['Microsoft.KeyVault.CertificateNearExpiry', 'Microsoft.KeyVault.CertificateExpired']
    }
    destination: {
      endpointType: 'MonitorAlert'
      properties: {
        severity: 'Sev2'
        actionGroups: [actionGroupId]
        description: 'A certificate in ${name} expires within 30 days or has expired: run `azd provision`, which issues the ingress and APIM certificates again from the private CA.'
      }
    }
  }
}

output name string = vault.name
output caName string = caVault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
