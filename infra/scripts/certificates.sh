#!/usr/bin/env bash
# Runs inside the deployment script of modules/certificates.bicep (Azure CLI image, the script's
# managed identity) on every provision. Creates what ARM cannot, each only when needed:
#   - the Redis password (once);
#   - a private CA (once; ten years), kept in its own vault that only this script's identity reads;
#   - from that CA, the Istio ingress server certificate and APIM's client certificate, issued
#     again when missing, not from this CA, or within RENEW_WITHIN_DAYS of expiry;
#   - the CA certificate (no key) in the main vault, which the ingress trusts for client certificates.
# Both sides of APIM <-> ingress mutual TLS trust the CA, so a re-issued certificate reaches the
# ingress (CSI driver sync) and APIM (versionless Key Vault reference) without breaking the other
# side. Prints the CA certificate (DER, base64), APIM's trusted root: the same on every run.
# certificates.py (passed in CERTIFICATES_PY) does the cryptography.
set -euo pipefail

: "${KEYVAULT_NAME:?}" "${CA_KEYVAULT_NAME:?}" "${PUBLIC_HOST:?}" "${CERTIFICATES_PY:?}" "${AZ_SCRIPTS_OUTPUT_PATH:?}"
RENEW_WITHIN_DAYS="${RENEW_WITHIN_DAYS:-90}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

certs() { python3 -c "$CERTIFICATES_PY" "$@"; }

exists() {  # exists <vault> secret|certificate <name>: 0 present, 1 absent; any other error stops the script
  local out
  if out="$(az keyvault "$2" show --vault-name "$1" -n "$3" --query id -o tsv 2>&1)"; then
    return 0
  fi
  case "$out" in
    *NotFound*) return 1 ;;
  esac
  echo "certificates: cannot read $2 $3 in $1: $out" >&2
  exit 1
}

policy() {  # policy pem|pfx: an imported certificate; Key Vault only warns before expiry, this script renews
  local content_type=application/x-pem-file
  [ "$1" = pfx ] && content_type=application/x-pkcs12
  cat <<JSON
{
  "issuerParameters": {"name": "Unknown"},
  "keyProperties": {"exportable": true, "keyType": "RSA", "keySize": 2048, "reuseKey": false},
  "secretProperties": {"contentType": "$content_type"},
  "lifetimeActions": [{"trigger": {"daysBeforeExpiry": 30}, "action": {"actionType": "EmailContacts"}}]
}
JSON
}

if ! exists "$KEYVAULT_NAME" secret redis-password; then
  # Hex: safe in a redis:// URL and in a redis.conf line without escaping.
  az keyvault secret set --vault-name "$KEYVAULT_NAME" -n redis-password --content-type text/plain \
    --value "$(python3 -c 'import secrets; print(secrets.token_hex(32))')" --output none
fi

if ! exists "$CA_KEYVAULT_NAME" secret ingress-ca; then
  certs ca "$work/new-ca.pem" --cn "Agent platform ingress CA ($PUBLIC_HOST)"
  az keyvault secret set --vault-name "$CA_KEYVAULT_NAME" -n ingress-ca --file "$work/new-ca.pem" \
    --content-type application/x-pem-file --output none
  echo "certificates: created the private CA"
fi
az keyvault secret download --vault-name "$CA_KEYVAULT_NAME" -n ingress-ca --file "$work/ca.pem"

ensure_leaf() {  # ensure_leaf <name> <subject CN> server|client pem|pfx
  local current="$work/$1.current.pem"
  if exists "$KEYVAULT_NAME" certificate "$1"; then
    az keyvault certificate download --vault-name "$KEYVAULT_NAME" -n "$1" -e PEM -f "$current"
  fi
  if certs needs-new "$current" --ca "$work/ca.pem" --within-days "$RENEW_WITHIN_DAYS"; then
    certs leaf "$work/$1.$4" --ca "$work/ca.pem" --cn "$2" --usage "$3" --format "$4"
    az keyvault certificate import --vault-name "$KEYVAULT_NAME" -n "$1" -f "$work/$1.$4" \
      --policy "$(policy "$4")" --output none
    echo "certificates: issued $1 ($2) from the private CA"
  fi
}

ensure_leaf istio-ingress "$PUBLIC_HOST" server pem   # the CSI driver splits key and chain
ensure_leaf apim-client "apim.$PUBLIC_HOST" client pfx # APIM reads PKCS#12 from Key Vault

certs ca-cert "$work/ca.pem" >"$work/ca-cert.pem"
if ! exists "$KEYVAULT_NAME" secret ingress-ca-cert ||
  [ "$(az keyvault secret show --vault-name "$KEYVAULT_NAME" -n ingress-ca-cert --query value -o tsv)" != "$(cat "$work/ca-cert.pem")" ]; then
  az keyvault secret set --vault-name "$KEYVAULT_NAME" -n ingress-ca-cert --file "$work/ca-cert.pem" \
    --content-type application/x-pem-file --output none
fi

printf '{"ingressRootCertificate": "%s"}' "$(certs ca-der "$work/ca.pem")" >"$AZ_SCRIPTS_OUTPUT_PATH"
