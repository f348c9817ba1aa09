// KEDA's operator reads gateway_active_streams from the Azure Monitor workspace with its own identity.
param monitorWorkspaceName string
param principalId string

var monitoringDataReader = 'b0d8363b-8ddd-447d-831f-62ca05bff136'

resource workspace 'Microsoft.Monitor/accounts@2023-04-03' existing = {
  name: monitorWorkspaceName
}

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, principalId, monitoringDataReader)
  scope: workspace
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringDataReader)
  }
}
