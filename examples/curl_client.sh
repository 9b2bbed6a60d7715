#!/bin/sh
# Call the attested secrets service with curl over its Unix domain socket.
#
#   ATTESTED_SOCKET=/run/attested/api.sock KEY_ARN=arn:aws:kms:... sh examples/curl_client.sh
#
# Prints the service's health, 16 random bytes from KMS (base64), and, when KEY_ARN is
# set, a new data key's encrypted form (to store) and the length of its plaintext.
# Binary values travel as base64 in JSON; errors are {"error": CODE, "message": TEXT}.
set -eu

SOCKET=${ATTESTED_SOCKET:-/run/attested/api.sock}
api() {
    # --fail-with-body: a non-2xx status exits non-zero and still shows the error JSON
    curl --silent --show-error --fail-with-body --unix-socket "$SOCKET" \
        -H 'Content-Type: application/json' "$@"
}

echo "health:"
api http://localhost/v1/health
echo

echo "random:"
api -X POST --data '{"number_of_bytes": 16}' http://localhost/v1/generate-random
echo

if [ -n "${KEY_ARN:-}" ]; then
    echo "data key:"
    api -X POST --data "{\"key_id\": \"$KEY_ARN\", \"encryption_context\": {\"app\": \"curl\"}}" \
        http://localhost/v1/generate-data-key |
        python3 -c 'import base64, json, sys; a = json.load(sys.stdin); print(json.dumps({"ciphertext_blob": a["ciphertext_blob"], "plaintext_length": len(base64.b64decode(a["plaintext"]))}))'
fi
