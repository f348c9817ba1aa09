// Entra ID app registrations, through the Microsoft Graph Bicep extension (bicepconfig.json):
// - the API: v2 access tokens (so `aud` is its application id and `iss` the tenant's v2 issuer,
//   which is what the gateway and APIM check), a delegated scope for the web client, and the
//   `Agents.Operator` app role (for people and for automation; the gateway's AUTH_OPERATOR_ROLE);
// - the web client: a single-page application that asks for that scope.
// The deploying identity needs Application.ReadWrite.OwnedBy (or Application Developer) in Entra ID.
extension microsoftGraphV1

param environmentName string
param token string
param spaRedirectUris array

var apiName = 'agents-api-${environmentName}-${token}'
var scopeId = guid(apiName, 'access_as_user')
// The id stays what it was when the role's value was `operator`: Entra ID keys assignments by id.
var operatorRoleId = guid(apiName, 'operator')
var identifierUri = 'api://${apiName}'

resource api 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: apiName
  displayName: 'Agent platform API (${environmentName})'
  signInAudience: 'AzureADMyOrg'
  identifierUris: [identifierUri]
  api: {
    requestedAccessTokenVersion: 2
    oauth2PermissionScopes: [
      {
        id: scopeId
        value: 'access_as_user'
        type: 'User'
        isEnabled: true
        adminConsentDisplayName: 'Use the agent platform'
        adminConsentDescription: 'Lets the web client call the agent gateway as the signed-in user.'
        userConsentDisplayName: 'Use the agent platform'
        userConsentDescription: 'Lets the web client call the agent gateway as you.'
      }
    ]
  }
  appRoles: [
    {
      id: operatorRoleId
      value: 'Agents.Operator'
      displayName: 'Operator'
      description: 'Pins agent versions other than the active one (canaries, evaluation); publishes and activates agent configurations, reads dead letters.'
      allowedMemberTypes: ['User', 'Application']
      isEnabled: true
    }
  ]
}

resource apiPrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: api.appId
}

resource spa 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: 'agents-web-${environmentName}-${token}'
  displayName: 'Agent platform web client (${environmentName})'
  signInAudience: 'AzureADMyOrg'
  spa: { redirectUris: spaRedirectUris }
  requiredResourceAccess: [
    {
      resourceAppId: api.appId
      resourceAccess: [{ id: scopeId, type: 'Scope' }]
    }
  ]
}

resource spaPrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: spa.appId
}

output apiAppId string = api.appId
output spaAppId string = spa.appId
output scope string = '${identifierUri}/access_as_user'
output operatorRoleId string = operatorRoleId
