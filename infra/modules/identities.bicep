// One user-assigned identity per workload, so each gets only its own roles: the gateway (Service
// Bus, Azure OpenAI, its Key Vault secrets), Redis (its password only), KEDA (reads Prometheus),
// the ingress certificate sync, APIM, the function app, the AKS control plane, and the deployment
// script that creates certificates. Created first, so roles exist before the workloads start.
param location string
param tags object
param prefix string

var names = ['gateway', 'redis', 'keda', 'ingress-certs', 'apim', 'functions', 'cluster', 'script']

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = [for name in names: {
  name: 'id-${prefix}-${name}'
  location: location
  tags: tags
}]

output gatewayName string = identity[0].name
output gatewayClientId string = identity[0].properties.clientId
output gatewayPrincipalId string = identity[0].properties.principalId
output redisName string = identity[1].name
output redisClientId string = identity[1].properties.clientId
output redisPrincipalId string = identity[1].properties.principalId
output kedaName string = identity[2].name
output kedaClientId string = identity[2].properties.clientId
output kedaPrincipalId string = identity[2].properties.principalId
output ingressCertsName string = identity[3].name
output ingressCertsClientId string = identity[3].properties.clientId
output ingressCertsPrincipalId string = identity[3].properties.principalId
output apimId string = identity[4].id
output apimClientId string = identity[4].properties.clientId
output apimPrincipalId string = identity[4].properties.principalId
output functionsId string = identity[5].id
output functionsClientId string = identity[5].properties.clientId
output functionsPrincipalId string = identity[5].properties.principalId
output clusterId string = identity[6].id
output clusterPrincipalId string = identity[6].properties.principalId
output scriptId string = identity[7].id
output scriptPrincipalId string = identity[7].properties.principalId
