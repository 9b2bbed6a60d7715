#!/usr/bin/env bash
# Launch one enclave in this pod and keep the pod alive as long as it runs.
#
#   ENCLAVE_NAME=payments ENCLAVE_CID=16 EIF_PATH=/enclave/payments.eif \
#   ENCLAVE_CPUS=2 ENCLAVE_MEMORY_MIB=2048 launch-enclave.sh
#
# A previous enclave of the same name (a restarted container) is terminated first, so
# the CID is free again. On SIGTERM (pod deletion) the enclave is terminated and the
# script exits 0; when the enclave stops by itself the script exits 1 and Kubernetes
# restarts the container, which launches it again.
set -euo pipefail

: "${ENCLAVE_NAME:?}" "${ENCLAVE_CID:?}" "${EIF_PATH:?}"
ENCLAVE_CPUS=${ENCLAVE_CPUS:-2}
ENCLAVE_MEMORY_MIB=${ENCLAVE_MEMORY_MIB:-2048}
POLL_SECONDS=${POLL_SECONDS:-5}

running() {
    nitro-cli describe-enclaves | grep -q "\"EnclaveName\": \"${ENCLAVE_NAME}\""
}

stop() {
    echo "launch-enclave: terminating ${ENCLAVE_NAME}" >&2
    nitro-cli terminate-enclave --enclave-name "${ENCLAVE_NAME}" >&2 || true
    exit 0
}

if running; then
    echo "launch-enclave: a previous ${ENCLAVE_NAME} is still running; terminating it" >&2
    nitro-cli terminate-enclave --enclave-name "${ENCLAVE_NAME}" >&2
fi

trap stop TERM INT
nitro-cli run-enclave \
    --enclave-name "${ENCLAVE_NAME}" \
    --enclave-cid "${ENCLAVE_CID}" \
    --eif-path "${EIF_PATH}" \
    --cpu-count "${ENCLAVE_CPUS}" \
    --memory "${ENCLAVE_MEMORY_MIB}"

while running; do
    sleep "${POLL_SECONDS}" &
    wait $! || true
done
echo "launch-enclave: ${ENCLAVE_NAME} is no longer running" >&2
exit 1
