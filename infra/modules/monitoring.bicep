// Logs, traces and metrics: Log Analytics (Container insights, diagnostic settings), workspace-based
// Application Insights (both deployables' OpenTelemetry), an Azure Monitor workspace (managed
// Prometheus: scrapes the gateway, feeds KEDA and the Prometheus alert rules), the data collection
// rules the cluster is associated with, and the action group every alert notifies.
param location string
param tags object
param prefix string
param alertEmail string

@description('Days Log Analytics keeps data; 30 is included in the ingestion price.')
param retentionDays int = 30

resource logs 'Microsoft.OperationalInsights/workspaces@2025-07-01' = {
  name: 'log-${prefix}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: retentionDays
    features: { enableLogAccessUsingOnlyResourcePermissions: true }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${prefix}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    IngestionMode: 'LogAnalytics'
    // The exporters authenticate with the connection string (kept in Key Vault and app settings).
    DisableLocalAuth: false
  }
}

resource prometheus 'Microsoft.Monitor/accounts@2023-04-03' = {
  name: 'amw-${prefix}'
  location: location
  tags: tags
}

resource prometheusEndpoint 'Microsoft.Insights/dataCollectionEndpoints@2024-03-11' = {
  name: 'dce-${prefix}-prometheus'
  location: location
  tags: tags
  kind: 'Linux'
  properties: {}
}

// What ama-metrics sends to the Azure Monitor workspace: the default targets (kubelet, cAdvisor,
// kube-state-metrics, node exporter) plus the PodMonitor in aks/base.
resource prometheusRule 'Microsoft.Insights/dataCollectionRules@2024-03-11' = {
  name: 'dcr-${prefix}-prometheus'
  location: location
  tags: tags
  kind: 'Linux'
  properties: {
    dataCollectionEndpointId: prometheusEndpoint.id
    dataSources: {
      prometheusForwarder: [
        { name: 'PrometheusDataSource', streams: ['Microsoft-PrometheusMetrics'], labelIncludeFilter: {} }
      ]
    }
    destinations: {
      monitoringAccounts: [{ accountResourceId: prometheus.id, name: 'MonitoringAccount1' }]
    }
    dataFlows: [{ streams: ['Microsoft-PrometheusMetrics'], destinations: ['MonitoringAccount1'] }]
  }
}

// Container insights: pod inventory, events, node and container metrics and container logs
// (ContainerLogV2; the default group) to Log Analytics.
resource containerInsightsRule 'Microsoft.Insights/dataCollectionRules@2024-03-11' = {
  name: 'dcr-${prefix}-containerinsights'
  location: location
  tags: tags
  kind: 'Linux'
  properties: {
    dataSources: {
      extensions: [
        {
          name: 'ContainerInsightsExtension'
          extensionName: 'ContainerInsights'
          streams: ['Microsoft-ContainerInsights-Group-Default']
          extensionSettings: {
            dataCollectionSettings: {
              interval: '1m'
              namespaceFilteringMode: 'Off'
              enableContainerLogV2: true
            }
          }
        }
      ]
    }
    destinations: {
      logAnalytics: [{ workspaceResourceId: logs.id, name: 'ciworkspace' }]
    }
    dataFlows: [
      { streams: ['Microsoft-ContainerInsights-Group-Default'], destinations: ['ciworkspace'] }
    ]
  }
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${prefix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take('agents', 12)
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      { name: 'operators', emailAddress: alertEmail, useCommonAlertSchema: true }
    ]
  }
}

output logAnalyticsId string = logs.id
output appInsightsId string = appInsights.id
#disable-next-line outputs-should-not-contain-secrets
output appInsightsConnectionString string = appInsights.properties.ConnectionString
output monitorWorkspaceId string = prometheus.id
output monitorWorkspaceName string = prometheus.name
output prometheusQueryEndpoint string = prometheus.properties.metrics.prometheusQueryEndpoint
output prometheusEndpointId string = prometheusEndpoint.id
output prometheusRuleId string = prometheusRule.id
output containerInsightsRuleId string = containerInsightsRule.id
output actionGroupId string = actionGroup.id
