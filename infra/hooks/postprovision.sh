#!/usr/bin/env bash
# azd runs this after every `azd provision` (and `azd up`), with the deployment's outputs in the
# environment. It does what ARM cannot, each step idempotent:
#   1. writes aks/overlays/<profile>/azure.env and gateway.env from the outputs, so the manifests
#      `azd deploy` applies name this deployment's identities, vault, endpoints and app ids;
#   2. writes $OVERLAY/redis/kustomization.yaml, the component that says where Redis runs
#      (REDIS_HOSTING: aks keeps the in-cluster Redis, managed switches to Azure Managed Redis);
#   3. imports the pinned Redis image into the registry (only when that tag is not there yet).
set -euo pipefail
cd "$(dirname "$0")/../.."

for name in AKS_OVERLAY REDIS_HOSTING AZURE_TENANT_ID AZURE_WORKLOAD_CLIENT_ID REDIS_CLIENT_ID KEDA_CLIENT_ID \
            INGRESS_CERTS_CLIENT_ID KEYVAULT_NAME AKS_ISTIO_REVISION PROMETHEUS_QUERY_ENDPOINT REDIS_IMAGE REDIS_SOURCE_IMAGE \
            PUBLIC_HOST AZURE_OPENAI_ENDPOINT SERVICEBUS_FULLY_QUALIFIED_NAMESPACE AUTH_JWKS_URL AUTH_ISSUER \
            AUTH_AUDIENCE WEB_ENTRA_CLIENT_ID WEB_ENTRA_AUTHORITY WEB_ENTRA_SCOPES AZURE_CONTAINER_REGISTRY_NAME; do
  if [ -z "${!name:-}" ]; then
    echo "postprovision: $name is not set (is this run by azd after a successful provision?)" >&2
    exit 1
  fi
done

OVERLAY="aks/overlays/${AKS_OVERLAY}"
echo "postprovision: writing $OVERLAY/azure.env and $OVERLAY/gateway.env"
cat >"$OVERLAY/azure.env" <<ENV
# Written by infra/hooks/postprovision.sh from the deployment's outputs.
AZURE_TENANT_ID=${AZURE_TENANT_ID}
AZURE_WORKLOAD_CLIENT_ID=${AZURE_WORKLOAD_CLIENT_ID}
REDIS_CLIENT_ID=${REDIS_CLIENT_ID}
KEDA_CLIENT_ID=${KEDA_CLIENT_ID}
INGRESS_CERTS_CLIENT_ID=${INGRESS_CERTS_CLIENT_ID}
KEYVAULT_NAME=${KEYVAULT_NAME}
PROMETHEUS_QUERY_ENDPOINT=${PROMETHEUS_QUERY_ENDPOINT}
REDIS_IMAGE=${REDIS_IMAGE}
ISTIO_REVISION=${AKS_ISTIO_REVISION}
PUBLIC_HOST=${PUBLIC_HOST}
ENV
cat >"$OVERLAY/gateway.env" <<ENV
# Written by infra/hooks/postprovision.sh from the deployment's outputs. No secret belongs here.
AZURE_OPENAI_ENDPOINT=${AZURE_OPENAI_ENDPOINT}
SERVICEBUS_FULLY_QUALIFIED_NAMESPACE=${SERVICEBUS_FULLY_QUALIFIED_NAMESPACE}
AUTH_JWKS_URL=${AUTH_JWKS_URL}
AUTH_ISSUER=${AUTH_ISSUER}
AUTH_AUDIENCE=${AUTH_AUDIENCE}
WEB_ENTRA_CLIENT_ID=${WEB_ENTRA_CLIENT_ID}
WEB_ENTRA_AUTHORITY=${WEB_ENTRA_AUTHORITY}
WEB_ENTRA_SCOPES=${WEB_ENTRA_SCOPES}
ENV

case "$REDIS_HOSTING" in
  aks) redis_components="[]" ;;
  managed) redis_components="[../../../components/azure-managed-redis]" ;;
  *) echo "postprovision: REDIS_HOSTING must be aks or managed, not $REDIS_HOSTING" >&2; exit 1 ;;
esac
echo "postprovision: Redis runs where REDIS_HOSTING=$REDIS_HOSTING says ($OVERLAY/redis)"
cat >"$OVERLAY/redis/kustomization.yaml" <<YAML
# Written by infra/hooks/postprovision.sh from the deployment's REDIS_HOSTING output: which Redis
# the gateway uses. aks: none (the in-cluster Redis of aks/base); managed: Azure Managed Redis.
apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
components: ${redis_components}
YAML

repository="${REDIS_IMAGE#*/}"
if az acr repository show -n "$AZURE_CONTAINER_REGISTRY_NAME" --image "$repository" --only-show-errors >/dev/null 2>&1; then
  echo "postprovision: $repository is already in $AZURE_CONTAINER_REGISTRY_NAME"
else
  echo "postprovision: importing $REDIS_SOURCE_IMAGE into $AZURE_CONTAINER_REGISTRY_NAME"
  az acr import -n "$AZURE_CONTAINER_REGISTRY_NAME" --source "$REDIS_SOURCE_IMAGE" --image "$repository" --only-show-errors
fi
