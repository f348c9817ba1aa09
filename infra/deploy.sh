#!/usr/bin/env bash
# From an empty subscription to a running system: creates every Azure resource of the design,
# wires identities (no keys, except Redis's password which lives in Key Vault), builds the
# gateway image in ACR, applies aks/overlays/<env>, publishes the function app.
#
#   az login && az account set --subscription <id>
#   ENVIRONMENT=dev LOCATION=westeurope infra/deploy.sh            # or ENVIRONMENT=prod
#
# Needs: az (with the aks-preview-free core commands), kubectl, openssl, and Azure Functions Core
# Tools (`func`) for the last step. Idempotent: re-running updates in place. Each step is a
# function below; STEPS="..." runs a subset (for example STEPS="images kubernetes").
set -euo pipefail
cd "$(dirname "$0")/.."

ENVIRONMENT="${ENVIRONMENT:-dev}"
LOCATION="${LOCATION:-westeurope}"
PREFIX="${PREFIX:-agents}"
KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.33}"
ISTIO_REVISION="${ISTIO_REVISION:-asm-1-24}"
GATEWAY_VERSION="${GATEWAY_VERSION:-0.1.0}"
REDIS_SOURCE_IMAGE="${REDIS_SOURCE_IMAGE:-docker.io/library/redis:7.4.2-alpine}"
OPENAI_MODEL="${OPENAI_MODEL:-gpt-4o-mini}"
OPENAI_MODEL_VERSION="${OPENAI_MODEL_VERSION:-2024-07-18}"
DNS_ZONE="${DNS_ZONE:-${PREFIX}.internal}"
PUBLIC_HOST="${PUBLIC_HOST:-gateway.${ENVIRONMENT}.${DNS_ZONE}}"
VNET_PREFIX="${VNET_PREFIX:-10.40}"
PUBLISHER_EMAIL="${PUBLISHER_EMAIL:-platform@example.com}"
# The backend the action pipeline dispatches to (the sample tickets service, or yours).
TICKETS_SERVICE_URL="${TICKETS_SERVICE_URL:-}"
STEPS="${STEPS:-foundation network data messaging ai identities cluster secrets images kubernetes dns functions apim}"

case "$ENVIRONMENT" in
  dev)  NODE_COUNT=2; NODE_SIZE=Standard_D4ds_v5; APIM_SKU=Developer; FUNC_SKU=EP1 ;;
  prod) NODE_COUNT=3; NODE_SIZE=Standard_D8ds_v5; APIM_SKU=Premium;   FUNC_SKU=EP2 ;;
  *) echo "deploy: ENVIRONMENT must be dev or prod, got '$ENVIRONMENT'" >&2; exit 2 ;;
esac

# Names: global ones carry a short hash of the subscription so two tenants never collide.
SUBSCRIPTION_ID="$(az account show --query id -o tsv)"
TENANT_ID="$(az account show --query tenantId -o tsv)"
SUFFIX="$(printf '%s' "$SUBSCRIPTION_ID" | sha256sum | cut -c1-6)"
RG="rg-${PREFIX}-${ENVIRONMENT}"
LOGS="log-${PREFIX}-${ENVIRONMENT}"
APPINSIGHTS="appi-${PREFIX}-${ENVIRONMENT}"
MONITOR_WORKSPACE="amw-${PREFIX}-${ENVIRONMENT}"
ACR="acr${PREFIX}${ENVIRONMENT}${SUFFIX}"
KEYVAULT="kv-${PREFIX}-${ENVIRONMENT}-${SUFFIX}"
SERVICEBUS="sb-${PREFIX}-${ENVIRONMENT}-${SUFFIX}"
COSMOS="cosmos-${PREFIX}-${ENVIRONMENT}-${SUFFIX}"
OPENAI="oai-${PREFIX}-${ENVIRONMENT}-${SUFFIX}"
STORAGE="st${PREFIX}${ENVIRONMENT}${SUFFIX}"
AKS="aks-${PREFIX}-${ENVIRONMENT}"
FUNC_PLAN="plan-${PREFIX}-${ENVIRONMENT}"
FUNC_APP="func-${PREFIX}-${ENVIRONMENT}-${SUFFIX}"
APIM="apim-${PREFIX}-${ENVIRONMENT}-${SUFFIX}"
VNET="vnet-${PREFIX}-${ENVIRONMENT}"
CLUSTER_IDENTITY="id-${PREFIX}-aks-${ENVIRONMENT}"
GATEWAY_IDENTITY="id-${PREFIX}-gateway-${ENVIRONMENT}"
KEDA_IDENTITY="id-${PREFIX}-keda-${ENVIRONMENT}"
NAMESPACE=agents
OVERLAY="aks/overlays/${ENVIRONMENT}"

log() { printf '\ndeploy [%s] %s\n' "$ENVIRONMENT" "$*"; }

role() {  # role <assignee object id> <role name> <scope>
  az role assignment create --assignee-object-id "$1" --assignee-principal-type ServicePrincipal \
    --role "$2" --scope "$3" --only-show-errors >/dev/null
}

foundation() {
  log "resource group, logs, Application Insights, managed Prometheus, container registry, Key Vault"
  az group create -n "$RG" -l "$LOCATION" --only-show-errors >/dev/null
  az monitor log-analytics workspace create -g "$RG" -n "$LOGS" -l "$LOCATION" --only-show-errors >/dev/null
  az monitor app-insights component create -g "$RG" -a "$APPINSIGHTS" -l "$LOCATION" \
    --workspace "$LOGS" --kind web --application-type web --only-show-errors >/dev/null
  az monitor account create -g "$RG" -n "$MONITOR_WORKSPACE" -l "$LOCATION" --only-show-errors >/dev/null
  az acr create -g "$RG" -n "$ACR" --sku Standard --admin-enabled false --only-show-errors >/dev/null
  az keyvault create -g "$RG" -n "$KEYVAULT" -l "$LOCATION" --enable-rbac-authorization true \
    --enable-purge-protection true --only-show-errors >/dev/null
  # The deploying user writes the secrets and certificates below.
  role "$(az ad signed-in-user show --query id -o tsv)" "Key Vault Administrator" \
    "$(az keyvault show -n "$KEYVAULT" --query id -o tsv)" 2>/dev/null || true
}

network() {
  # APIM reaches the Istio *internal* load balancer, so both live in one virtual network: nodes
  # (and that load balancer) in subnet aks, APIM (external mode: public gateway, private
  # backends) in subnet apim, whose NSG carries the rules APIM's VNet mode requires.
  log "virtual network $VNET: subnets aks and apim"
  az network vnet create -g "$RG" -n "$VNET" -l "$LOCATION" --address-prefixes "${VNET_PREFIX}.0.0/16" \
    --subnet-name aks --subnet-prefixes "${VNET_PREFIX}.0.0/20" --only-show-errors >/dev/null
  az network nsg create -g "$RG" -n "nsg-${PREFIX}-apim-${ENVIRONMENT}" -l "$LOCATION" --only-show-errors >/dev/null
  local priority=100 rule
  for rule in "Inbound Internet 443" "Inbound ApiManagement 3443" "Inbound AzureLoadBalancer 6390" \
              "Outbound Storage 443" "Outbound Sql 1433" "Outbound AzureKeyVault 443" "Outbound AzureMonitor 443"; do
    read -r direction tag port <<<"$rule"
    local source="$tag" destination=VirtualNetwork
    if [ "$direction" = Outbound ]; then source=VirtualNetwork; destination="$tag"; fi
    az network nsg rule create -g "$RG" --nsg-name "nsg-${PREFIX}-apim-${ENVIRONMENT}" -n "apim-${direction,,}-${tag,,}-${port}" \
      --priority "$priority" --direction "$direction" --access Allow --protocol Tcp \
      --source-address-prefixes "$source" --destination-address-prefixes "$destination" \
      --destination-port-ranges "$port" --only-show-errors >/dev/null
    priority=$((priority + 10))
  done
  az network vnet subnet create -g "$RG" --vnet-name "$VNET" -n apim --address-prefixes "${VNET_PREFIX}.16.0/27" \
    --network-security-group "nsg-${PREFIX}-apim-${ENVIRONMENT}" --only-show-errors >/dev/null
  az network public-ip create -g "$RG" -n "pip-${PREFIX}-apim-${ENVIRONMENT}" -l "$LOCATION" --sku Standard \
    --dns-name "${APIM}" --zone 1 2 3 --only-show-errors >/dev/null
  # The cluster's own identity joins its nodes and internal load balancers to the subnet.
  az identity create -g "$RG" -n "$CLUSTER_IDENTITY" -l "$LOCATION" --only-show-errors >/dev/null
  role "$(az identity show -g "$RG" -n "$CLUSTER_IDENTITY" --query principalId -o tsv)" "Network Contributor" \
    "$(az network vnet show -g "$RG" -n "$VNET" --query id -o tsv)"
}

data() {
  log "Cosmos DB (action_results, partition key /conversationId) and the Functions storage account"
  az cosmosdb create -g "$RG" -n "$COSMOS" --locations regionName="$LOCATION" failoverPriority=0 \
    --default-consistency-level Session --disable-key-based-metadata-write-access true --only-show-errors >/dev/null
  az cosmosdb sql database create -g "$RG" -a "$COSMOS" -n agent --only-show-errors >/dev/null
  az cosmosdb sql container create -g "$RG" -a "$COSMOS" -d agent -n action_results \
    --partition-key-path /conversationId --throughput 400 --only-show-errors >/dev/null
  az cosmosdb sql container create -g "$RG" -a "$COSMOS" -d agent -n dead_letters \
    --partition-key-path /partition --throughput 400 --only-show-errors >/dev/null
  az storage account create -g "$RG" -n "$STORAGE" -l "$LOCATION" --sku Standard_ZRS --kind StorageV2 \
    --allow-blob-public-access false --allow-shared-key-access false --min-tls-version TLS1_2 --only-show-errors >/dev/null
}

messaging() {
  log "Service Bus: queues actions (dead-letter after 10 deliveries) and action-updates"
  az servicebus namespace create -g "$RG" -n "$SERVICEBUS" -l "$LOCATION" --sku Standard \
    --disable-local-auth true --only-show-errors >/dev/null
  az servicebus queue create -g "$RG" --namespace-name "$SERVICEBUS" -n actions --max-delivery-count 10 \
    --enable-dead-lettering-on-message-expiration true --lock-duration PT1M --only-show-errors >/dev/null
  az servicebus queue create -g "$RG" --namespace-name "$SERVICEBUS" -n action-updates --max-delivery-count 10 \
    --enable-dead-lettering-on-message-expiration true --only-show-errors >/dev/null
}

ai() {
  log "Azure OpenAI account and model deployment $OPENAI_MODEL"
  az cognitiveservices account create -g "$RG" -n "$OPENAI" -l "$LOCATION" --kind OpenAI --sku S0 \
    --custom-domain "$OPENAI" --yes --only-show-errors >/dev/null
  az resource update --ids "$(az cognitiveservices account show -g "$RG" -n "$OPENAI" --query id -o tsv)" \
    --set properties.disableLocalAuth=true --only-show-errors >/dev/null
  az cognitiveservices account deployment create -g "$RG" -n "$OPENAI" --deployment-name "$OPENAI_MODEL" \
    --model-name "$OPENAI_MODEL" --model-version "$OPENAI_MODEL_VERSION" --model-format OpenAI \
    --sku-name GlobalStandard --sku-capacity 50 --only-show-errors >/dev/null
}

identities() {
  log "managed identities for the gateway (and Redis's Key Vault read) and for KEDA"
  az identity create -g "$RG" -n "$GATEWAY_IDENTITY" -l "$LOCATION" --only-show-errors >/dev/null
  az identity create -g "$RG" -n "$KEDA_IDENTITY" -l "$LOCATION" --only-show-errors >/dev/null
  local gateway keda
  gateway="$(az identity show -g "$RG" -n "$GATEWAY_IDENTITY" --query principalId -o tsv)"
  keda="$(az identity show -g "$RG" -n "$KEDA_IDENTITY" --query principalId -o tsv)"
  local sb_id
  sb_id="$(az servicebus namespace show -g "$RG" -n "$SERVICEBUS" --query id -o tsv)"
  role "$gateway" "Key Vault Secrets User" "$(az keyvault show -n "$KEYVAULT" --query id -o tsv)"
  role "$gateway" "Azure Service Bus Data Sender" "$sb_id/queues/actions"
  role "$gateway" "Azure Service Bus Data Receiver" "$sb_id/queues/action-updates"
  role "$gateway" "Cognitive Services OpenAI User" "$(az cognitiveservices account show -g "$RG" -n "$OPENAI" --query id -o tsv)"
  role "$keda" "Monitoring Data Reader" "$(az monitor account show -g "$RG" -n "$MONITOR_WORKSPACE" --query id -o tsv)"
}

cluster() {
  log "AKS $KUBERNETES_VERSION: workload identity, Istio $ISTIO_REVISION, KEDA, Key Vault CSI, managed Prometheus"
  az aks create -g "$RG" -n "$AKS" -l "$LOCATION" --kubernetes-version "$KUBERNETES_VERSION" \
    --node-count "$NODE_COUNT" --node-vm-size "$NODE_SIZE" --zones 1 2 3 \
    --network-plugin azure --network-plugin-mode overlay --network-dataplane cilium \
    --enable-oidc-issuer --enable-workload-identity \
    --enable-azure-service-mesh --revision "$ISTIO_REVISION" \
    --enable-keda --enable-addons azure-keyvault-secrets-provider --enable-secret-rotation \
    --enable-azure-monitor-metrics \
    --azure-monitor-workspace-resource-id "$(az monitor account show -g "$RG" -n "$MONITOR_WORKSPACE" --query id -o tsv)" \
    --vnet-subnet-id "$(az network vnet subnet show -g "$RG" --vnet-name "$VNET" -n aks --query id -o tsv)" \
    --assign-identity "$(az identity show -g "$RG" -n "$CLUSTER_IDENTITY" --query id -o tsv)" \
    --attach-acr "$ACR" --generate-ssh-keys --only-show-errors >/dev/null
  az aks mesh enable-ingress-gateway -g "$RG" -n "$AKS" --ingress-gateway-type internal --only-show-errors >/dev/null || true
  local issuer
  issuer="$(az aks show -g "$RG" -n "$AKS" --query oidcIssuerProfile.issuerUrl -o tsv)"
  for account in streaming-gateway redis; do
    az identity federated-credential create -g "$RG" --identity-name "$GATEWAY_IDENTITY" -n "aks-$account" \
      --issuer "$issuer" --subject "system:serviceaccount:${NAMESPACE}:${account}" \
      --audiences api://AzureADTokenExchange --only-show-errors >/dev/null
  done
  az identity federated-credential create -g "$RG" --identity-name "$KEDA_IDENTITY" -n aks-keda-operator \
    --issuer "$issuer" --subject system:serviceaccount:kube-system:keda-operator \
    --audiences api://AzureADTokenExchange --only-show-errors >/dev/null
  az aks get-credentials -g "$RG" -n "$AKS" --overwrite-existing --only-show-errors
}

secrets() {
  log "Key Vault: Redis password, Application Insights connection string, ingress and APIM certificates"
  if ! az keyvault secret show --vault-name "$KEYVAULT" -n redis-password >/dev/null 2>&1; then
    # Hex: safe inside a redis:// URL and a redis.conf line without escaping.
    az keyvault secret set --vault-name "$KEYVAULT" -n redis-password --value "$(openssl rand -hex 32)" \
      --only-show-errors >/dev/null
  fi
  az keyvault secret set --vault-name "$KEYVAULT" -n appinsights-connection-string --only-show-errors \
    --value "$(az monitor app-insights component show -g "$RG" -a "$APPINSIGHTS" --query connectionString -o tsv)" >/dev/null
  local policy
  policy="$(az keyvault certificate get-default-policy | sed "s/CN=CLIGetDefaultPolicy/CN=${PUBLIC_HOST}/")"
  for cert in istio-ingress apim-client; do
    az keyvault certificate show --vault-name "$KEYVAULT" -n "$cert" >/dev/null 2>&1 \
      || az keyvault certificate create --vault-name "$KEYVAULT" -n "$cert" -p "$policy" --only-show-errors >/dev/null
  done
  # The Istio ingress credential: its server certificate and key, and the CA that signs APIM's
  # client certificate (self-signed here; use your PKI's CA in production).
  local work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  az keyvault secret download --vault-name "$KEYVAULT" -n istio-ingress -f "$work/ingress.pfx" --encoding base64
  openssl pkcs12 -in "$work/ingress.pfx" -passin pass: -nokeys -out "$work/tls.crt"
  openssl pkcs12 -in "$work/ingress.pfx" -passin pass: -nocerts -nodes -out "$work/tls.key"
  az keyvault certificate download --vault-name "$KEYVAULT" -n apim-client -f "$work/ca.crt" --encoding PEM
  kubectl create namespace aks-istio-ingress --dry-run=client -o yaml | kubectl apply -f -
  kubectl -n aks-istio-ingress create secret generic streaming-gateway-mtls --from-file="$work/tls.crt" \
    --from-file="$work/tls.key" --from-file="$work/ca.crt" --dry-run=client -o yaml | kubectl apply -f -
}

images() {
  log "images: gateway built in ACR (no local Docker needed), Redis imported"
  az acr build -r "$ACR" -t "streaming-gateway:${GATEWAY_VERSION}" -f streaming_gateway/Dockerfile . --only-show-errors
  az acr import -n "$ACR" --source "$REDIS_SOURCE_IMAGE" --image "library/${REDIS_SOURCE_IMAGE##*/}" --force --only-show-errors
}

write_overlay_env() {
  log "writing $OVERLAY/azure.env and $OVERLAY/gateway.env"
  cat >"$OVERLAY/azure.env" <<EOF
# Written by infra/deploy.sh for ${ENVIRONMENT}.
AZURE_TENANT_ID=${TENANT_ID}
AZURE_WORKLOAD_CLIENT_ID=$(az identity show -g "$RG" -n "$GATEWAY_IDENTITY" --query clientId -o tsv)
KEDA_CLIENT_ID=$(az identity show -g "$RG" -n "$KEDA_IDENTITY" --query clientId -o tsv)
KEYVAULT_NAME=${KEYVAULT}
PROMETHEUS_QUERY_ENDPOINT=$(az monitor account show -g "$RG" -n "$MONITOR_WORKSPACE" --query metrics.prometheusQueryEndpoint -o tsv)
GATEWAY_IMAGE=${ACR}.azurecr.io/streaming-gateway:${GATEWAY_VERSION}
REDIS_IMAGE=${ACR}.azurecr.io/library/${REDIS_SOURCE_IMAGE##*/}
PUBLIC_HOST=${PUBLIC_HOST}
EOF
  cat >"$OVERLAY/gateway.env" <<EOF
# Written by infra/deploy.sh for ${ENVIRONMENT}. No secret belongs here.
AZURE_OPENAI_ENDPOINT=https://${OPENAI}.openai.azure.com/
SERVICEBUS_FULLY_QUALIFIED_NAMESPACE=${SERVICEBUS}.servicebus.windows.net
AUTH_JWKS_URL=https://login.microsoftonline.com/${TENANT_ID}/discovery/v2.0/keys
AUTH_ISSUER=https://login.microsoftonline.com/${TENANT_ID}/v2.0
AUTH_AUDIENCE=api://${PREFIX}-${ENVIRONMENT}
EOF
}

kubernetes() {
  write_overlay_env
  log "kubectl apply -k $OVERLAY"
  kubectl apply -k "$OVERLAY"
  kubectl -n "$NAMESPACE" rollout status deployment/streaming-gateway --timeout=10m
  kubectl -n "$NAMESPACE" rollout status statefulset/redis --timeout=10m
}

dns() {
  # PUBLIC_HOST resolves, inside the virtual network only, to the internal ingress load balancer.
  case "$PUBLIC_HOST" in
    *".${DNS_ZONE}") ;;
    *) echo "deploy: PUBLIC_HOST ($PUBLIC_HOST) must be inside DNS_ZONE ($DNS_ZONE)" >&2; return 1 ;;
  esac
  log "private DNS ${PUBLIC_HOST} -> internal Istio ingress"
  local address="" attempt
  for attempt in $(seq 60); do
    address="$(kubectl -n aks-istio-ingress get service aks-istio-ingressgateway-internal \
      -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)"
    [ -n "$address" ] && break
    echo "deploy: waiting for the internal ingress address ($attempt/60)"
    sleep 10
  done
  [ -n "$address" ] || { echo "deploy: the internal ingress got no address" >&2; return 1; }
  az network private-dns zone create -g "$RG" -n "$DNS_ZONE" --only-show-errors >/dev/null
  az network private-dns link vnet create -g "$RG" -z "$DNS_ZONE" -n "$VNET" --virtual-network "$VNET" \
    --registration-enabled false --only-show-errors >/dev/null || true
  az network private-dns record-set a delete -g "$RG" -z "$DNS_ZONE" -n "${PUBLIC_HOST%."$DNS_ZONE"}" --yes \
    --only-show-errors >/dev/null 2>&1 || true
  az network private-dns record-set a add-record -g "$RG" -z "$DNS_ZONE" -n "${PUBLIC_HOST%."$DNS_ZONE"}" \
    -a "$address" --only-show-errors >/dev/null
}

functions() {
  log "function app $FUNC_APP (Elastic Premium $FUNC_SKU, system identity, identity-based connections)"
  az functionapp plan create -g "$RG" -n "$FUNC_PLAN" -l "$LOCATION" --sku "$FUNC_SKU" --is-linux --only-show-errors >/dev/null
  az functionapp create -g "$RG" -n "$FUNC_APP" --plan "$FUNC_PLAN" --storage-account "$STORAGE" \
    --runtime python --runtime-version 3.11 --functions-version 4 --os-type Linux \
    --app-insights "$APPINSIGHTS" --assign-identity '[system]' --only-show-errors >/dev/null
  local principal storage_id sb_id
  principal="$(az functionapp identity show -g "$RG" -n "$FUNC_APP" --query principalId -o tsv)"
  storage_id="$(az storage account show -g "$RG" -n "$STORAGE" --query id -o tsv)"
  sb_id="$(az servicebus namespace show -g "$RG" -n "$SERVICEBUS" --query id -o tsv)"
  # Durable Functions keeps its task hub in blobs, queues and tables.
  for storage_role in "Storage Blob Data Owner" "Storage Queue Data Contributor" "Storage Table Data Contributor"; do
    role "$principal" "$storage_role" "$storage_id"
  done
  role "$principal" "Azure Service Bus Data Receiver" "$sb_id/queues/actions"
  role "$principal" "Azure Service Bus Data Sender" "$sb_id/queues/action-updates"
  az cosmosdb sql role assignment create -g "$RG" -a "$COSMOS" --scope / --principal-id "$principal" \
    --role-definition-id 00000000-0000-0000-0000-000000000002 --only-show-errors >/dev/null  # Data Contributor
  az functionapp config appsettings set -g "$RG" -n "$FUNC_APP" --only-show-errors >/dev/null --settings \
    "AzureWebJobsStorage__accountName=${STORAGE}" \
    "ServiceBusConnection__fullyQualifiedNamespace=${SERVICEBUS}.servicebus.windows.net" \
    "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE=${SERVICEBUS}.servicebus.windows.net" \
    "SERVICEBUS_ACTIONS_QUEUE=actions" "SERVICEBUS_UPDATES_QUEUE=action-updates" \
    "COSMOS_ENDPOINT=$(az cosmosdb show -g "$RG" -n "$COSMOS" --query documentEndpoint -o tsv)" \
    "COSMOS_DATABASE=agent" "COSMOS_CONTAINER=action_results" "COSMOS_DEADLETTER_CONTAINER=dead_letters"
  if [ -n "$TICKETS_SERVICE_URL" ]; then
    az functionapp config appsettings set -g "$RG" -n "$FUNC_APP" --only-show-errors >/dev/null \
      --settings "TICKETS_SERVICE_URL=${TICKETS_SERVICE_URL}"
  else
    echo "deploy: TICKETS_SERVICE_URL not set: the function app has no backend to dispatch actions to" >&2
  fi
  # Identity only: no storage account key is left in the settings.
  az functionapp config appsettings delete -g "$RG" -n "$FUNC_APP" --setting-names AzureWebJobsStorage \
    --only-show-errors >/dev/null
  func azure functionapp publish "$FUNC_APP" --python
}

apim() {
  log "API Management $APIM ($APIM_SKU): the gateway API, validate-jwt, rate limit, unbuffered streaming"
  az apim create -g "$RG" -n "$APIM" -l "$LOCATION" --sku-name "$APIM_SKU" --publisher-name "$PREFIX" \
    --publisher-email "$PUBLISHER_EMAIL" --enable-managed-identity true --only-show-errors >/dev/null
  local apim_id
  apim_id="$(az apim show -g "$RG" -n "$APIM" --query id -o tsv)"
  # Into the virtual network (external mode), so backends on the internal ingress are reachable.
  az rest --method patch --url "${apim_id}?api-version=2022-08-01" --body "{\"properties\": {\"virtualNetworkType\": \"External\", \"virtualNetworkConfiguration\": {\"subnetResourceId\": \"$(az network vnet subnet show -g "$RG" --vnet-name "$VNET" -n apim --query id -o tsv)\"}, \"publicIpAddressId\": \"$(az network public-ip show -g "$RG" -n "pip-${PREFIX}-apim-${ENVIRONMENT}" --query id -o tsv)\"}}" >/dev/null
  role "$(az apim show -g "$RG" -n "$APIM" --query identity.principalId -o tsv)" "Key Vault Secrets User" \
    "$(az keyvault show -n "$KEYVAULT" --query id -o tsv)"
  az apim nv create -g "$RG" -n "$APIM" --named-value-id entra-tenant-id --display-name entra-tenant-id --value "$TENANT_ID" --only-show-errors >/dev/null
  az apim nv create -g "$RG" -n "$APIM" --named-value-id gateway-audience --display-name gateway-audience --value "api://${PREFIX}-${ENVIRONMENT}" --only-show-errors >/dev/null
  # The client certificate APIM presents to the Istio ingress (mTLS), straight from Key Vault.
  az rest --method put --url "${apim_id}/certificates/apim-client?api-version=2022-08-01" --body "{\"properties\": {\"keyVault\": {\"secretIdentifier\": \"https://${KEYVAULT}.vault.azure.net/secrets/apim-client\"}}}" >/dev/null
  az rest --method put --url "${apim_id}/backends/streaming-gateway?api-version=2022-08-01" --body "{\"properties\": {\"url\": \"https://${PUBLIC_HOST}\", \"protocol\": \"http\", \"credentials\": {\"certificateIds\": [\"${apim_id}/certificates/apim-client\"]}, \"tls\": {\"validateCertificateChain\": false, \"validateCertificateName\": true}}}" >/dev/null
  az apim api create -g "$RG" --service-name "$APIM" --api-id agent-gateway --path agents --display-name "Agent gateway" \
    --service-url "https://${PUBLIC_HOST}" --protocols https --subscription-required false --only-show-errors >/dev/null
  for operation in "GET /v1/*" "POST /v1/*" "DELETE /v1/*"; do
    az apim api operation create -g "$RG" --service-name "$APIM" --api-id agent-gateway \
      --method "${operation%% *}" --url-template "${operation#* }" --display-name "$operation" --only-show-errors >/dev/null
  done
  az rest --method put --url "${apim_id}/apis/agent-gateway/policies/policy?api-version=2022-08-01" \
    --body "$(python3 -c 'import json,sys; print(json.dumps({"properties": {"format": "rawxml", "value": open(sys.argv[1]).read()}}))' apim/gateway-api-policy.xml)" >/dev/null
  # WebSocket (/v1/ws) is its own APIM API type; its policy runs on the handshake.
  az apim api create -g "$RG" --service-name "$APIM" --api-id agent-gateway-ws --path agents-ws \
    --display-name "Agent gateway (WebSocket)" --api-type websocket --service-url "wss://${PUBLIC_HOST}/v1/ws" \
    --protocols wss --subscription-required false --only-show-errors >/dev/null
  az rest --method put --url "${apim_id}/apis/agent-gateway-ws/policies/policy?api-version=2022-08-01" \
    --body "$(python3 -c 'import json,sys; print(json.dumps({"properties": {"format": "rawxml", "value": open(sys.argv[1]).read()}}))' apim/websocket-api-policy.xml)" >/dev/null
  log "done: https://$(az apim show -g "$RG" -n "$APIM" --query gatewayUrl -o tsv | sed 's#https://##')/agents/v1/"
}

for step in $STEPS; do
  "$step"
done
