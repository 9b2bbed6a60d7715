#!/bin/bash
# The manual alternative to `attested exec` (see docs/exec.md): the Dockerfile's
# entrypoint is now `attested exec --config /etc/attested/enclave.toml -- CMD`, which does
# all of this in one process and also opens the app's [[secrets]]. Kept for reference and
# for images that must run the parts as separate processes.
#
# Enclave entrypoint: loopback up, egress proxy, attested serve, ingress, then the app.
#
# Any of them exiting ends the enclave (its console shows why in debug mode); the
# parent's systemd unit decides whether to run it again.
set -euo pipefail

PARENT_CID=3                      # the parent instance, as seen from an enclave
EGRESS_PORT=8000                  # [egress] listen on the parent
APP_PORT="${APP_PORT:-8443}"      # [[ingress]] to = "vsock:<enclave CID>:$APP_PORT"
mkdir -p /run/attested

# 1. An enclave boots with `lo` down and without 127.0.0.1. The proxy, the service's
#    TCP listener and the app's loopback port all need it.
if command -v ip >/dev/null 2>&1; then
    ip addr add 127.0.0.1/8 dev lo 2>/dev/null || true
    ip link set dev lo up
else
    python3 - <<'PY'
import fcntl, socket, struct
SIOCSIFADDR, SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8916, 0x8913, 0x8914, 0x1
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    address = struct.pack("=H2s4s8x", socket.AF_INET, b"", socket.inet_aton("127.0.0.1"))
    try:
        fcntl.ioctl(s, SIOCSIFADDR, struct.pack("16s16s", b"lo", address))
    except OSError:
        pass  # already there
    flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh14x", b"lo", 0))[:18])[1]
    fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))
PY
fi

# 2. Egress: an HTTP CONNECT proxy whose tunnels go to the parent's allowlist.
attested relay enclave-egress --listen tcp:127.0.0.1:3128 --parent "vsock:${PARENT_CID}:${EGRESS_PORT}" &
export HTTPS_PROXY=http://127.0.0.1:3128 NO_PROXY=127.0.0.1,localhost

# 3. The secrets service: KMS with attestation, behind unix:/run/attested/api.sock.
attested serve --config /etc/attested/serve.toml --ready-file /run/attested/serve.ready &
tries=0
until [ -e /run/attested/serve.ready ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 300 ]; then echo "entrypoint: attested serve did not start" >&2; exit 1; fi
    sleep 0.1
done

# 4. Ingress: the parent's [[ingress]] forward arrives on vsock; the app listens on loopback.
attested relay ingress --listen "vsock:ANY:${APP_PORT}" --to "tcp:127.0.0.1:${APP_PORT}" &

# 5. The app (the image's CMD). When anything exits, stop the rest and exit with it.
"$@" &
status=0
wait -n || status=$?
echo "entrypoint: a process exited (status $status); stopping the others" >&2
kill -TERM $(jobs -p) 2>/dev/null || true
wait || true
exit "$status"
