// One virtual network: AKS nodes (and the Istio internal load balancer) in `aks`, APIM in `apim`
// (external mode: public gateway, private backends). Subnets are declared inside the network, so
// a later deployment never drops one that is in use. The private zone resolves the gateway's host
// name to the internal ingress (the A record is set by infra/hooks/postdeploy.sh, once the load
// balancer has an address).
param location string
param tags object
param prefix string
param token string
param privateZone string
param clusterPrincipalId string

@description('First two octets of the 10.x/16 address space.')
param addressPrefix string = '10.40'

var networkContributor = '4d97b98b-1d4f-4787-a291-c67834d212e7'

// The rules API Management's virtual network mode requires (stv2, external).
var apimRules = [
  { name: 'apim-in-internet-443', direction: 'Inbound', source: 'Internet', destination: 'VirtualNetwork', port: '443' }
  { name: 'apim-in-management-3443', direction: 'Inbound', source: 'ApiManagement', destination: 'VirtualNetwork', port: '3443' }
  { name: 'apim-in-loadbalancer-6390', direction: 'Inbound', source: 'AzureLoadBalancer', destination: 'VirtualNetwork', port: '6390' }
  { name: 'apim-out-storage-443', direction: 'Outbound', source: 'VirtualNetwork', destination: 'Storage', port: '443' }
  { name: 'apim-out-sql-1433', direction: 'Outbound', source: 'VirtualNetwork', destination: 'Sql', port: '1433' }
  { name: 'apim-out-keyvault-443', direction: 'Outbound', source: 'VirtualNetwork', destination: 'AzureKeyVault', port: '443' }
  { name: 'apim-out-monitor-443', direction: 'Outbound', source: 'VirtualNetwork', destination: 'AzureMonitor', port: '443' }
]

resource apimNsg 'Microsoft.Network/networkSecurityGroups@2025-07-01' = {
  name: 'nsg-${prefix}-apim'
  location: location
  tags: tags
  properties: {
    securityRules: [for (rule, i) in apimRules: {
      name: rule.name
      properties: {
        priority: 100 + 10 * i
        direction: rule.direction
        access: 'Allow'
        protocol: 'Tcp'
        sourceAddressPrefix: rule.source
        sourcePortRange: '*'
        destinationAddressPrefix: rule.destination
        destinationPortRange: rule.port
      }
    }]
  }
}

resource aksNsg 'Microsoft.Network/networkSecurityGroups@2025-07-01' = {
  name: 'nsg-${prefix}-aks'
  location: location
  tags: tags
  properties: {
    securityRules: [
      // APIM -> internal ingress. (The default rules also admit the rest of the network; the
      // ingress itself then requires APIM's client certificate.)
      {
        name: 'apim-to-ingress-443'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: '${addressPrefix}.16.0/27'
          sourcePortRange: '*'
          destinationAddressPrefix: '${addressPrefix}.0.0/20'
          destinationPortRange: '443'
        }
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2025-07-01' = {
  name: 'vnet-${prefix}'
  location: location
  tags: tags
  properties: {
    addressSpace: { addressPrefixes: ['${addressPrefix}.0.0/16'] }
    subnets: [
      {
        name: 'aks'
        properties: {
          addressPrefix: '${addressPrefix}.0.0/20'
          networkSecurityGroup: { id: aksNsg.id }
        }
      }
      {
        name: 'apim'
        properties: {
          addressPrefix: '${addressPrefix}.16.0/27'
          networkSecurityGroup: { id: apimNsg.id }
        }
      }
    ]
  }
}

resource apimPublicIp 'Microsoft.Network/publicIPAddresses@2025-05-01' = {
  name: 'pip-${prefix}-apim'
  location: location
  tags: tags
  sku: { name: 'Standard', tier: 'Regional' }
  zones: ['1', '2', '3']
  properties: {
    publicIPAllocationMethod: 'Static'
    dnsSettings: { domainNameLabel: 'apim-${prefix}-${token}' }
  }
}

resource zone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: privateZone
  location: 'global'
  tags: tags
}

resource zoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: zone
  name: vnet.name
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: { id: vnet.id }
  }
}

// The cluster's identity joins nodes and internal load balancers to the subnet.
resource clusterNetwork 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vnet.id, clusterPrincipalId, networkContributor)
  scope: vnet
  properties: {
    principalId: clusterPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', networkContributor)
  }
}

output aksSubnetId string = '${vnet.id}/subnets/aks'
output apimSubnetId string = '${vnet.id}/subnets/apim'
output apimPublicIpId string = apimPublicIp.id
output zoneName string = zone.name
