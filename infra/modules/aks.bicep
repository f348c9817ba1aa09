// AKS: Entra ID sign-in with Azure RBAC (no local accounts), OIDC issuer + workload identity
// (each ServiceAccount federated with its own managed identity), the Istio add-on at a pinned
// revision with its internal ingress gateway, KEDA, the Key Vault CSI driver with rotation (so
// renewed certificates and secrets reach the synced Kubernetes Secrets), managed Prometheus and
// Container insights, cluster autoscaler over three zones, automatic patch upgrades.
param location string
param tags object
param name string
param profile string
param kubernetesVersion string
param istioRevision string
param subnetId string
param clusterIdentityId string
param logAnalyticsId string
param monitorWorkspaceId string
param prometheusRuleId string
param prometheusEndpointId string
param containerInsightsRuleId string
param registryName string
param adminPrincipalId string
param adminPrincipalType string
param namespace string
@description('Federated credentials: {identityName, namespace, serviceAccount} per workload identity.')
param workloadIdentities array

@description('CIDRs allowed to reach the API server; empty: any (Entra ID sign-in still required).')
param authorizedIpRanges array = []

var sizes = {
  dev: { vmSize: 'Standard_D4ds_v5', minCount: 1, maxCount: 3 }
  prod: { vmSize: 'Standard_D8ds_v5', minCount: 3, maxCount: 12 }
}
var roles = {
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  clusterAdmin: 'b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b'
}

resource cluster 'Microsoft.ContainerService/managedClusters@2025-10-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'gateway' })
  sku: { name: 'Base', tier: profile == 'prod' ? 'Standard' : 'Free' }
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${clusterIdentityId}': {} }
  }
  properties: {
    kubernetesVersion: kubernetesVersion
    dnsPrefix: name
    enableRBAC: true
    disableLocalAccounts: true
    aadProfile: { managed: true, enableAzureRBAC: true, tenantID: tenant().tenantId }
    apiServerAccessProfile: empty(authorizedIpRanges) ? {} : { authorizedIPRanges: authorizedIpRanges }
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        osType: 'Linux'
        osSKU: 'AzureLinux'
        vmSize: sizes[profile].vmSize
        availabilityZones: ['1', '2', '3']
        enableAutoScaling: true
        count: sizes[profile].minCount
        minCount: sizes[profile].minCount
        maxCount: sizes[profile].maxCount
        maxPods: 110
        vnetSubnetID: subnetId
        type: 'VirtualMachineScaleSets'
        // OS disk on the VM's local temporary storage: faster, and nothing persistent on it.
        osDiskType: 'Ephemeral'
        osDiskSizeGB: 128
        upgradeSettings: { maxSurge: '33%' }
      }
    ]
    autoScalerProfile: {
      expander: 'least-waste'
      'balance-similar-node-groups': 'true'
      'scale-down-unneeded-time': '10m'
      // Streams drain for up to a minute: give evicted gateway pods their whole grace period.
      'max-graceful-termination-sec': '120'
    }
    networkProfile: {
      networkPlugin: 'azure'
      networkPluginMode: 'overlay'
      networkDataplane: 'cilium'
      networkPolicy: 'cilium'
      podCidr: '192.168.0.0/16'
      serviceCidr: '10.0.0.0/16'
      dnsServiceIP: '10.0.0.10'
      loadBalancerSku: 'standard'
      outboundType: 'loadBalancer'
    }
    oidcIssuerProfile: { enabled: true }
    securityProfile: {
      workloadIdentity: { enabled: true }
      imageCleaner: { enabled: true, intervalHours: 168 }
    }
    serviceMeshProfile: {
      mode: 'Istio'
      istio: {
        revisions: [istioRevision]
        components: { ingressGateways: [{ mode: 'Internal', enabled: true }] }
      }
    }
    workloadAutoScalerProfile: { keda: { enabled: true } }
    azureMonitorProfile: {
      metrics: {
        enabled: true
        kubeStateMetrics: { metricLabelsAllowlist: '', metricAnnotationsAllowList: '' }
      }
    }
    addonProfiles: {
      omsagent: {
        enabled: true
        config: { logAnalyticsWorkspaceResourceID: logAnalyticsId, useAADAuth: 'true' }
      }
      azureKeyvaultSecretsProvider: {
        enabled: true
        config: { enableSecretRotation: 'true', rotationPollInterval: '2m' }
      }
      azurepolicy: { enabled: true }
      kubeDashboard: { enabled: false }
    }
    autoUpgradeProfile: { upgradeChannel: 'patch', nodeOSUpgradeChannel: 'NodeImage' }
  }
}

// Control-plane logs: who changed what (audit without reads), Entra ID sign-ins, and why the
// autoscaler did or did not add nodes. Resource-specific tables; the full kube-audit with every
// read would cost more than the rest of the workspace.
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: cluster
  properties: {
    workspaceId: logAnalyticsId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      { category: 'kube-audit-admin', enabled: true }
      { category: 'guard', enabled: true }
      { category: 'cluster-autoscaler', enabled: true }
    ]
  }
}

// Managed Prometheus: the cluster sends to the Azure Monitor workspace through these.
resource prometheusEndpointLink 'Microsoft.Insights/dataCollectionRuleAssociations@2024-03-11' = {
  name: 'configurationAccessEndpoint'
  scope: cluster
  properties: { dataCollectionEndpointId: prometheusEndpointId }
}

resource prometheusRuleLink 'Microsoft.Insights/dataCollectionRuleAssociations@2024-03-11' = {
  name: 'prometheus'
  scope: cluster
  properties: { dataCollectionRuleId: prometheusRuleId }
}

resource containerInsightsLink 'Microsoft.Insights/dataCollectionRuleAssociations@2024-03-11' = {
  name: 'ContainerInsightsExtension'
  scope: cluster
  properties: { dataCollectionRuleId: containerInsightsRuleId }
}

resource registry 'Microsoft.ContainerRegistry/registries@2025-11-01' existing = {
  name: registryName
}

resource kubeletPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, name, roles.acrPull)
  scope: registry
  properties: {
    principalId: cluster.properties.identityProfile.kubeletidentity.objectId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
  }
}

// `azd deploy` applies the manifests as the deploying identity (Entra ID, no local accounts).
resource deployerAdmin 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(adminPrincipalId)) {
  name: guid(cluster.id, adminPrincipalId, roles.clusterAdmin)
  scope: cluster
  properties: {
    principalId: adminPrincipalId
    principalType: adminPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.clusterAdmin)
  }
}

resource workloadIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' existing = [for wi in workloadIdentities: {
  name: wi.identityName
}]

// One at a time: Entra ID rejects concurrent writes of federated credentials.
@batchSize(1)
resource federation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2024-11-30' = [for (wi, i) in workloadIdentities: {
  parent: workloadIdentity[i]
  name: 'aks-${wi.namespace}-${wi.serviceAccount}'
  properties: {
    issuer: cluster.properties.oidcIssuerProfile.issuerURL
    subject: 'system:serviceaccount:${wi.namespace}:${wi.serviceAccount}'
    audiences: ['api://AzureADTokenExchange']
  }
}]

output id string = cluster.id
output name string = cluster.name
output oidcIssuer string = cluster.properties.oidcIssuerProfile.issuerURL
output applicationNamespace string = namespace
