// The portal workbook that follows one conversation from the gateway to Cosmos DB
// (workbook.json: a conversation id parameter, the timeline of every span of its traces, its
// Cosmos DB writes, log lines and exceptions), on the Application Insights resource.
param location string
param tags object
param prefix string
param appInsightsId string

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, prefix, 'conversation-trace')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Agent platform: conversation trace (${prefix})'
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: loadTextContent('workbook.json')
  }
}

output id string = workbook.id
