// The Redis password and the certificates of APIM <-> Istio ingress mutual TLS, made by a deployment
// script (scripts/certificates.sh + certificates.py) because ARM has no resource for them: a
// private CA (kept in its own vault, `caKeyVaultName`, that only the script's identity reads), and
// from it the ingress server certificate and APIM's client certificate. Both sides trust the CA,
// so a certificate issued again reaches them without breaking mutual TLS. The script checks before
// it writes; it runs on every deployment (forceUpdateTag; ARM deletes the script resource after
// retentionInterval anyway) to re-issue a certificate within `renewWithinDays` of expiry, and its
// output, the CA certificate APIM trusts, is the same on every run.
param location string
param tags object
param keyVaultName string
param caKeyVaultName string
param publicHost string
param scriptIdentityId string
param azCliVersion string
param runTag string = utcNow()

@description('A certificate this close to expiry is issued again by the next provision (Key Vault raises CertificateNearExpiry 30 days before: alerts.bicep).')
param renewWithinDays int = 90

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
      { name: 'CA_KEYVAULT_NAME', value: caKeyVaultName }
      { name: 'PUBLIC_HOST', value: publicHost }
      { name: 'RENEW_WITHIN_DAYS', value: string(renewWithinDays) }
      { name: 'CERTIFICATES_PY', value: loadTextContent('../scripts/certificates.py') }
    ]
    scriptContent: loadTextContent('../scripts/certificates.sh')
  }
}

output apimClientSecretName string = 'apim-client'
@description('The private CA certificate (base64 DER): APIM\'s trusted root for the ingress chain.')
output ingressRootCertificate string = script.properties.outputs.ingressRootCertificate
