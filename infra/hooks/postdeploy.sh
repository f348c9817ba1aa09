#!/usr/bin/env bash
# azd runs this after `azd deploy`: points PUBLIC_HOST (in the private DNS zone) at the Istio
# internal ingress load balancer, whose address exists only once the add-on has created it, and
# waits for the rollouts. Setting the same address again changes nothing.
set -euo pipefail

for name in AZURE_RESOURCE_GROUP AZURE_AKS_CLUSTER_NAME PRIVATE_DNS_ZONE PUBLIC_HOST AKS_NAMESPACE; do
  if [ -z "${!name:-}" ]; then
    echo "postdeploy: $name is not set (is this run by azd?)" >&2
    exit 1
  fi
done
case "$PUBLIC_HOST" in
  *".${PRIVATE_DNS_ZONE}") ;;
  *) echo "postdeploy: PUBLIC_HOST ($PUBLIC_HOST) must be inside $PRIVATE_DNS_ZONE" >&2; exit 1 ;;
esac

# The cluster has no local accounts: an Entra ID kubeconfig, converted for kubelogin.
az aks get-credentials -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_AKS_CLUSTER_NAME" --overwrite-existing --only-show-errors
kubelogin convert-kubeconfig -l azurecli

kubectl -n "$AKS_NAMESPACE" rollout status deployment/streaming-gateway --timeout=10m
# With Azure Managed Redis (REDIS_HOSTING=managed) there is no in-cluster Redis to wait for.
if [ "${REDIS_HOSTING:-aks}" != "managed" ]; then
  kubectl -n "$AKS_NAMESPACE" rollout status statefulset/redis --timeout=10m
fi
kubectl -n aks-istio-ingress rollout status deployment/ingress-certificates --timeout=5m

address=""
for attempt in $(seq 60); do
  # The add-on creates the service and then the load balancer: absent or empty both mean "not yet".
  if address="$(kubectl -n aks-istio-ingress get service aks-istio-ingressgateway-internal \
      -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null)" && [ -n "$address" ]; then
    break
  fi
  echo "postdeploy: waiting for the internal ingress address ($attempt/60)"
  sleep 10
done
if [ -z "$address" ]; then
  echo "postdeploy: the internal ingress got no address" >&2
  exit 1
fi

record="${PUBLIC_HOST%".${PRIVATE_DNS_ZONE}"}"
zone=(-g "$AZURE_RESOURCE_GROUP" -z "$PRIVATE_DNS_ZONE" -n "$record")
if ! az network private-dns record-set a show "${zone[@]}" --only-show-errors >/dev/null 2>&1; then
  az network private-dns record-set a create "${zone[@]}" --ttl 300 --only-show-errors >/dev/null
fi
current="$(az network private-dns record-set a show "${zone[@]}" --query 'aRecords[0].ipv4Address' -o tsv)"
if [ "$current" = "$address" ]; then
  echo "postdeploy: $PUBLIC_HOST already resolves to $address"
  exit 0
fi
echo "postdeploy: $PUBLIC_HOST -> $address"
if [ -n "$current" ]; then
  az network private-dns record-set a remove-record "${zone[@]}" -a "$current" --keep-empty-record-set \
    --only-show-errors >/dev/null
fi
az network private-dns record-set a add-record "${zone[@]}" -a "$address" --only-show-errors >/dev/null
