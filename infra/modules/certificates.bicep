// The Redis password and the ingress / APIM client certificates, created in Key Vault by a
// deployment script (scripts/certificates.sh) because ARM has no resource for certificate
// issuance. The script checks before it creates, so re-runs change nothing; it runs on every
// deployment (forceUpdateTag) so a certificate Key Vault renewed reaches APIM's trusted roots.
param location string
param tags object
param keyVaultName string
param publicHost string
param scriptIdentityId string
param azCliVersion string
param runTag string = utcNow()

resource script 'Microsoft.Resources/deploymentScripts@2023-08-01' = {
  name: 'ds-certificates'
  location: location
  tags: tags
  kind: 'AzureCLI'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${scriptIdentityId}': {} }
  }
  properties: {
    azCliVersion: azCliVersion
    forceUpdateTag: runTag
    timeout: 'PT20M'
    retentionInterval: 'PT1H'
    cleanupPreference: 'OnSuccess'
    environmentVariables: [
      { name: 'KEYVAULT_NAME', value: keyVaultName }
      { name: 'PUBLIC_HOST', value: publicHost }
    ]
    scriptContent: loadTextContent('../scripts/certificates.sh')
  }
}

output apimClientSecretName string = 'apim-client'
output ingressCertificate string = script.properties.outputs.ingressCertificate
