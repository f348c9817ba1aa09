#!/usr/bin/env bash
# Runs inside the deployment script of modules/certificates.bicep (Azure CLI image, the script's
# managed identity). Creates what ARM cannot: the Redis password and the two self-signed
# certificates (the Istio ingress server certificate and APIM's client certificate for mutual TLS),
# each only when absent, so every run after the first changes nothing. Key Vault renews both
# certificates itself; the CSI driver's secret sync brings the renewal into the cluster. Prints the
# ingress certificate (DER, base64) so APIM can trust it as the root of the backend's chain.
set -euo pipefail

: "${KEYVAULT_NAME:?}" "${PUBLIC_HOST:?}" "${AZ_SCRIPTS_OUTPUT_PATH:?}"

if ! az keyvault secret show --vault-name "$KEYVAULT_NAME" -n redis-password --query id -o tsv >/dev/null 2>&1; then
  # Hex: safe in a redis:// URL and in a redis.conf line without escaping.
  az keyvault secret set --vault-name "$KEYVAULT_NAME" -n redis-password --content-type text/plain \
    --value "$(python3 -c 'import secrets; print(secrets.token_hex(32))')" --output none
fi

policy() {  # policy <subject CN> <extended key usage>
  cat <<JSON
{
  "issuerParameters": {"name": "Self"},
  "keyProperties": {"exportable": true, "keyType": "RSA", "keySize": 2048, "reuseKey": false},
  "secretProperties": {"contentType": "application/x-pem-file"},
  "x509CertificateProperties": {
    "subject": "CN=$1",
    "subjectAlternativeNames": {"dnsNames": ["$1"]},
    "ekus": ["$2"],
    "keyUsage": ["digitalSignature", "keyEncipherment"],
    "validityInMonths": 12
  },
  "lifetimeActions": [{"trigger": {"lifetimePercentage": 80}, "action": {"actionType": "AutoRenew"}}]
}
JSON
}

ensure_certificate() {  # ensure_certificate <name> <subject CN> <eku>
  if ! az keyvault certificate show --vault-name "$KEYVAULT_NAME" -n "$1" --query id -o tsv >/dev/null 2>&1; then
    az keyvault certificate create --vault-name "$KEYVAULT_NAME" -n "$1" -p "$(policy "$2" "$3")" --output none
  fi
  az keyvault certificate wait --vault-name "$KEYVAULT_NAME" -n "$1" --created
}

ensure_certificate istio-ingress "$PUBLIC_HOST" 1.3.6.1.5.5.7.3.1    # server authentication
ensure_certificate apim-client "apim.$PUBLIC_HOST" 1.3.6.1.5.5.7.3.2 # client authentication

ingress="$(az keyvault certificate show --vault-name "$KEYVAULT_NAME" -n istio-ingress --query cer -o tsv)"
printf '{"ingressCertificate": "%s"}' "$ingress" >"$AZ_SCRIPTS_OUTPUT_PATH"
