// API Management in front of the gateway: in the virtual network (external mode), so it reaches
// the Istio internal ingress at https://<publicHost>. Two APIs with the policies in apim/:
// HTTP (`agents`, SSE and JSON, unbuffered) and WebSocket (`agents-ws`, token checked on the
// handshake). To the ingress it presents the `apim-client` certificate from Key Vault (mutual
// TLS) and validates the ingress certificate's chain and name against the private CA
// (modules/certificates.bicep), installed as a trusted root.
param location string
param tags object
param name string
param profile string
param publisherEmail string
param identityId string
param identityClientId string
param subnetId string
param publicIpId string
param publicHost string
param keyVaultUri string
param clientCertificateSecret string
@description('Base64 DER of the private CA that issues the ingress certificate: the root of the backend chain. It outlives the certificates it issues, so a renewal changes nothing here.')
param ingressRootCertificate string
@description('The API app registration\'s application id: the `aud` of a v2 access token.')
param audience string
param appInsightsId string
@secure()
param appInsightsConnectionString string
param logAnalyticsId string

resource service 'Microsoft.ApiManagement/service@2024-05-01' = {
  name: name
  location: location
  tags: tags
  sku: profile == 'prod' ? { name: 'Premium', capacity: 3 } : { name: 'Developer', capacity: 1 }
  zones: profile == 'prod' ? ['1', '2', '3'] : null
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: 'Agent platform'
    virtualNetworkType: 'External'
    virtualNetworkConfiguration: { subnetResourceId: subnetId }
    publicIpAddressId: publicIpId
    certificates: [
      { encodedCertificate: ingressRootCertificate, storeName: 'Root' }
    ]
    customProperties: {
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls10': 'false'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls11': 'false'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls10': 'false'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls11': 'false'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Ssl30': 'false'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Protocols.Server.Http2': 'true'
    }
  }
}

// Named values the policies use ({{entra-tenant-id}}, {{gateway-audience}}).
var namedValues = {
  'entra-tenant-id': tenant().tenantId
  'gateway-audience': audience
}

resource namedValue 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = [for nv in items(namedValues): {
  parent: service
  name: nv.key
  properties: { displayName: nv.key, value: nv.value, secret: false }
}]

resource clientCertificate 'Microsoft.ApiManagement/service/certificates@2024-05-01' = {
  parent: service
  name: clientCertificateSecret
  properties: {
    keyVault: {
      // No version: APIM picks up the renewed certificate by itself.
      secretIdentifier: '${keyVaultUri}secrets/${clientCertificateSecret}'
      identityClientId: identityClientId
    }
  }
}

resource backend 'Microsoft.ApiManagement/service/backends@2024-05-01' = {
  parent: service
  name: 'streaming-gateway'
  properties: {
    url: 'https://${publicHost}'
    protocol: 'http'
    credentials: { certificateIds: [clientCertificate.id] }
    tls: { validateCertificateChain: true, validateCertificateName: true }
  }
}

resource httpApi 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  parent: service
  name: 'agent-gateway'
  properties: {
    displayName: 'Agent gateway'
    path: 'agents'
    protocols: ['https']
    serviceUrl: 'https://${publicHost}'
    subscriptionRequired: false
  }
}

var operations = [
  { name: 'get', method: 'GET' }
  { name: 'post', method: 'POST' }
  { name: 'delete', method: 'DELETE' }
]

resource httpOperation 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = [for op in operations: {
  parent: httpApi
  name: op.name
  properties: { displayName: '${op.method} /v1/*', method: op.method, urlTemplate: '/v1/*' }
}]

resource httpPolicy 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = {
  parent: httpApi
  name: 'policy'
  properties: { format: 'rawxml', value: loadTextContent('../../apim/gateway-api-policy.xml') }
  dependsOn: [namedValue, backend]
}

resource wsApi 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  parent: service
  name: 'agent-gateway-ws'
  properties: {
    displayName: 'Agent gateway (WebSocket)'
    type: 'websocket'
    path: 'agents-ws'
    protocols: ['wss']
    serviceUrl: 'wss://${publicHost}/v1/ws'
    subscriptionRequired: false
  }
}

// A WebSocket API has one operation, onHandshake, created with it; its policy runs on the handshake.
resource onHandshake 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' existing = {
  parent: wsApi
  name: 'onHandshake'
}

resource wsPolicy 'Microsoft.ApiManagement/service/apis/operations/policies@2024-05-01' = {
  parent: onHandshake
  name: 'policy'
  properties: { format: 'rawxml', value: loadTextContent('../../apim/websocket-api-policy.xml') }
  dependsOn: [namedValue, clientCertificate]
}

resource logger 'Microsoft.ApiManagement/service/loggers@2024-05-01' = {
  parent: service
  name: 'appinsights'
  properties: {
    loggerType: 'applicationInsights'
    resourceId: appInsightsId
    credentials: { connectionString: appInsightsConnectionString }
  }
}

// Request and response bodies are never logged: logging them would buffer the streams.
var apiDiagnosticSettings = {
  loggerId: logger.id
  alwaysLog: 'allErrors'
  httpCorrelationProtocol: 'W3C'
  verbosity: 'information'
  sampling: { samplingType: 'fixed', percentage: 100 }
  frontend: { request: { body: { bytes: 0 } }, response: { body: { bytes: 0 } } }
  backend: { request: { body: { bytes: 0 } }, response: { body: { bytes: 0 } } }
}

resource httpDiagnostics 'Microsoft.ApiManagement/service/apis/diagnostics@2024-05-01' = {
  parent: httpApi
  name: 'applicationinsights'
  properties: apiDiagnosticSettings
}

resource wsDiagnostics 'Microsoft.ApiManagement/service/apis/diagnostics@2024-05-01' = {
  parent: wsApi
  name: 'applicationinsights'
  properties: apiDiagnosticSettings
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: service
  properties: {
    workspaceId: logAnalyticsId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [{ category: 'GatewayLogs', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output gatewayUrl string = service.properties.gatewayUrl
