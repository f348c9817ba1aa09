// The whole agent platform in one subscription-scoped deployment: `azd up` runs it (with
// main.parameters.json), a second run changes nothing, `azd down --purge` removes it.
// Each concern is a module under modules/; this file only names things and wires outputs to inputs.
targetScope = 'subscription'

@minLength(1)
@maxLength(20)
@description('azd environment name (AZURE_ENV_NAME); part of every resource name.')
param environmentName string

@minLength(1)
@description('Azure region of every resource (AZURE_LOCATION). Pick one with availability zones.')
param location string

@description('Object id of the identity running `azd up` (AZURE_PRINCIPAL_ID): gets Key Vault and cluster admin roles.')
param principalId string

@allowed(['User', 'ServicePrincipal', 'Group'])
@description('What principalId is: a person (User, the default) or a pipeline (ServicePrincipal). Azure rejects a role assignment whose type is wrong.')
param principalType string = 'User'

@allowed(['dev', 'prod'])
@description('Sizes and SKUs: dev is small and cheap, prod is zone-redundant with headroom. Also the aks/overlays/<profile> azd deploys.')
param profile string = 'dev'

@description('AKS Kubernetes minor version. Supported ones in your region: `az aks get-versions --location <region> -o table`.')
param kubernetesVersion string = '1.35'

@description('Istio add-on revision (also the istio.io/rev label of aks/base/namespace.yaml). Supported ones: `az aks mesh get-revisions --location <region> -o table`.')
param istioRevision string = 'asm-1-30'

@description('Tag of the redis image imported into ACR. 7.4.10 is the urgent security release of July 2026 (remote code execution fixes in every line from 6.2 to 8.8; 7.4.9 and older are affected). Tags: docker.io/library/redis; release notes: github.com/redis/redis/releases.')
param redisImageTag string = '7.4.10-alpine'

@allowed(['aks', 'managed'])
@description('Where Redis runs. aks: one primary in the cluster (StatefulSet on zone-redundant disk, aks/base/redis.yaml). managed: Azure Managed Redis with the OSS cluster policy, the choice that scales past one primary (docs/operations.md, Redis Cluster); the postprovision hook then switches the overlay to aks/components/azure-managed-redis.')
param redisHosting string = 'aks'

@description('Azure OpenAI model, deployed under its own name (agent configs name the deployment). Available ones: `az cognitiveservices model list --location <region> -o table`.')
param openAiModel string = 'gpt-4o-mini'

@description('Version of openAiModel.')
param openAiModelVersion string = '2024-07-18'

@description('API Management publisher e-mail (required by APIM).')
param publisherEmail string = 'platform@example.com'

@description('Where alerts are mailed; empty: alerts fire in the portal only.')
param alertEmail string = ''

@description('Backend the action pipeline dispatches to; empty: the function app uses its local default (and dispatches fail).')
param ticketsServiceUrl string = ''

@description('Azure CLI image version of the deployment script that creates certificates and the Redis password. Tags: mcr.microsoft.com/azure-cli.')
param azCliVersion string = '2.77.0'

var token = toLower(uniqueString(subscription().id, environmentName, location))
var prefix = 'agents-${environmentName}'
var tags = { 'azd-env-name': environmentName, system: 'agent-platform', profile: profile }
var privateZone = 'agents.internal'
var publicHost = 'gateway.${environmentName}.${privateZone}'
var namespace = 'agents'
var queues = { actions: 'actions', updates: 'action-updates' }

resource rg 'Microsoft.Resources/resourceGroups@2025-04-01' = {
  name: 'rg-${prefix}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  scope: rg
  name: 'monitoring'
  params: { location: location, tags: tags, prefix: prefix, alertEmail: alertEmail }
}

module network 'modules/network.bicep' = {
  scope: rg
  name: 'network'
  params: { location: location, tags: tags, prefix: prefix, token: token, privateZone: privateZone, clusterPrincipalId: identities.outputs.clusterPrincipalId }
}

module identities 'modules/identities.bicep' = {
  scope: rg
  name: 'identities'
  params: { location: location, tags: tags, prefix: prefix }
}

module keyVault 'modules/keyvault.bicep' = {
  scope: rg
  name: 'keyvault'
  params: {
    location: location
    tags: tags
    name: toLower('kv-${take(environmentName, 10)}-${take(token, 10)}')
    caName: toLower('kvca-${take(environmentName, 8)}-${take(token, 10)}')
    principalId: principalId
    principalType: principalType
    secretReaders: [identities.outputs.gatewayPrincipalId, identities.outputs.redisPrincipalId, identities.outputs.ingressCertsPrincipalId, identities.outputs.apimPrincipalId]
    certificateWriterPrincipalId: identities.outputs.scriptPrincipalId
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    actionGroupId: monitoring.outputs.actionGroupId
  }
}

module certificates 'modules/certificates.bicep' = {
  scope: rg
  name: 'certificates'
  params: {
    location: location
    tags: tags
    keyVaultName: keyVault.outputs.name
    caKeyVaultName: keyVault.outputs.caName
    publicHost: publicHost
    scriptIdentityId: identities.outputs.scriptId
    azCliVersion: azCliVersion
  }
}

module registry 'modules/registry.bicep' = {
  scope: rg
  name: 'registry'
  params: { location: location, tags: tags, name: toLower('acr${replace(environmentName, '-', '')}${token}'), profile: profile, logAnalyticsId: monitoring.outputs.logAnalyticsId }
}

module messaging 'modules/messaging.bicep' = {
  scope: rg
  name: 'messaging'
  params: {
    location: location
    tags: tags
    name: 'sb-${prefix}-${token}'
    profile: profile
    queues: queues
    gatewayPrincipalId: identities.outputs.gatewayPrincipalId
    functionsPrincipalId: identities.outputs.functionsPrincipalId
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module cosmos 'modules/cosmos.bicep' = {
  scope: rg
  name: 'cosmos'
  params: {
    location: location
    tags: tags
    name: toLower('cosmos-${take(environmentName, 16)}-${token}')
    profile: profile
    functionsPrincipalId: identities.outputs.functionsPrincipalId
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module openAi 'modules/openai.bicep' = {
  scope: rg
  name: 'openai'
  params: {
    location: location
    tags: tags
    name: 'oai-${prefix}-${token}'
    model: openAiModel
    modelVersion: openAiModelVersion
    gatewayPrincipalId: identities.outputs.gatewayPrincipalId
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module redisManaged 'modules/redis-managed.bicep' = if (redisHosting == 'managed') {
  scope: rg
  name: 'redis-managed'
  params: {
    location: location
    tags: tags
    name: 'redis-${prefix}-${token}'
    profile: profile
    keyVaultName: keyVault.outputs.name
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    actionGroupId: monitoring.outputs.actionGroupId
  }
}

module functions 'modules/functions.bicep' = {
  scope: rg
  name: 'functions'
  params: {
    location: location
    tags: tags
    appName: 'func-${prefix}-${token}'
    storageName: toLower('st${take(replace(environmentName, '-', ''), 9)}${token}')
    identityId: identities.outputs.functionsId
    identityClientId: identities.outputs.functionsClientId
    identityPrincipalId: identities.outputs.functionsPrincipalId
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    servicebusNamespace: messaging.outputs.fullyQualifiedNamespace
    queues: queues
    cosmosEndpoint: cosmos.outputs.endpoint
    cosmosDatabase: cosmos.outputs.database
    cosmosContainers: cosmos.outputs.containers
    ticketsServiceUrl: ticketsServiceUrl
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module aks 'modules/aks.bicep' = {
  scope: rg
  name: 'aks'
  params: {
    location: location
    tags: tags
    name: 'aks-${prefix}'
    profile: profile
    kubernetesVersion: kubernetesVersion
    istioRevision: istioRevision
    subnetId: network.outputs.aksSubnetId
    clusterIdentityId: identities.outputs.clusterId
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    monitorWorkspaceId: monitoring.outputs.monitorWorkspaceId
    prometheusRuleId: monitoring.outputs.prometheusRuleId
    prometheusEndpointId: monitoring.outputs.prometheusEndpointId
    containerInsightsRuleId: monitoring.outputs.containerInsightsRuleId
    registryName: registry.outputs.name
    adminPrincipalId: principalId
    adminPrincipalType: principalType
    namespace: namespace
    workloadIdentities: [
      { identityName: identities.outputs.gatewayName, namespace: namespace, serviceAccount: 'streaming-gateway' }
      { identityName: identities.outputs.redisName, namespace: namespace, serviceAccount: 'redis' }
      { identityName: identities.outputs.kedaName, namespace: 'kube-system', serviceAccount: 'keda-operator' }
      { identityName: identities.outputs.ingressCertsName, namespace: 'aks-istio-ingress', serviceAccount: 'ingress-certificates' }
    ]
  }
}

module kedaReader 'modules/monitoring-reader.bicep' = {
  scope: rg
  name: 'keda-reader'
  params: { monitorWorkspaceName: monitoring.outputs.monitorWorkspaceName, principalId: identities.outputs.kedaPrincipalId }
}

module entra 'modules/entra.bicep' = {
  scope: rg
  name: 'entra'
  params: {
    environmentName: environmentName
    token: token
    spaRedirectUris: ['https://${apimName}.azure-api.net/']
  }
}

var apimName = 'apim-${prefix}-${token}'

module apim 'modules/apim.bicep' = {
  scope: rg
  name: 'apim'
  params: {
    location: location
    tags: tags
    name: apimName
    profile: profile
    publisherEmail: publisherEmail
    identityId: identities.outputs.apimId
    identityClientId: identities.outputs.apimClientId
    subnetId: network.outputs.apimSubnetId
    publicIpId: network.outputs.apimPublicIpId
    publicHost: publicHost
    keyVaultUri: keyVault.outputs.uri
    clientCertificateSecret: certificates.outputs.apimClientSecretName
    ingressRootCertificate: certificates.outputs.ingressRootCertificate
    audience: entra.outputs.apiAppId
    appInsightsId: monitoring.outputs.appInsightsId
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module alerts 'modules/alerts.bicep' = {
  scope: rg
  name: 'alerts'
  params: {
    location: location
    tags: tags
    prefix: prefix
    actionGroupId: monitoring.outputs.actionGroupId
    servicebusId: messaging.outputs.id
    queues: queues
    appInsightsId: monitoring.outputs.appInsightsId
    monitorWorkspaceId: monitoring.outputs.monitorWorkspaceId
    clusterId: aks.outputs.id
    clusterName: aks.outputs.name
    namespace: namespace
  }
}

module workbook 'modules/workbook.bicep' = {
  scope: rg
  name: 'workbook'
  params: { location: location, tags: tags, prefix: prefix, appInsightsId: monitoring.outputs.appInsightsId }
}

// azd stores these in .azure/<env>/.env; infra/hooks/ and azure.yaml read them.
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_AKS_CLUSTER_NAME string = aks.outputs.name
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer
output AZURE_CONTAINER_REGISTRY_NAME string = registry.outputs.name
output AZURE_FUNCTION_APP_NAME string = functions.outputs.name
output AKS_OVERLAY string = profile
// The postprovision hook picks the overlay's Redis component from it (aks/overlays/<profile>/redis).
output REDIS_HOSTING string = redisHosting
output AKS_NAMESPACE string = namespace
output AKS_ISTIO_REVISION string = istioRevision
output AKS_KUBERNETES_VERSION string = kubernetesVersion
output AZURE_WORKLOAD_CLIENT_ID string = identities.outputs.gatewayClientId
output REDIS_CLIENT_ID string = identities.outputs.redisClientId
output KEDA_CLIENT_ID string = identities.outputs.kedaClientId
output INGRESS_CERTS_CLIENT_ID string = identities.outputs.ingressCertsClientId
output KEYVAULT_NAME string = keyVault.outputs.name
output PROMETHEUS_QUERY_ENDPOINT string = monitoring.outputs.prometheusQueryEndpoint
output REDIS_IMAGE string = '${registry.outputs.loginServer}/library/redis:${redisImageTag}'
output REDIS_SOURCE_IMAGE string = 'docker.io/library/redis:${redisImageTag}'
output PUBLIC_HOST string = publicHost
output PRIVATE_DNS_ZONE string = privateZone
output AZURE_OPENAI_ENDPOINT string = openAi.outputs.endpoint
output SERVICEBUS_FULLY_QUALIFIED_NAMESPACE string = messaging.outputs.fullyQualifiedNamespace
output AUTH_JWKS_URL string = '${environment().authentication.loginEndpoint}${tenant().tenantId}/discovery/v2.0/keys'
output AUTH_ISSUER string = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
output AUTH_AUDIENCE string = entra.outputs.apiAppId
output WEB_ENTRA_CLIENT_ID string = entra.outputs.spaAppId
output WEB_ENTRA_AUTHORITY string = '${environment().authentication.loginEndpoint}${tenant().tenantId}'
output WEB_ENTRA_SCOPES string = entra.outputs.scope
output APIM_GATEWAY_URL string = apim.outputs.gatewayUrl
