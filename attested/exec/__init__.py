"""The enclave runtime (``attested exec``): run an unmodified app with its secrets.

``attested exec --config /etc/attested/enclave.toml -- CMD [ARGS...]`` is an enclave
image's entrypoint (it may run as PID 1). In order it brings ``lo`` up and writes the
``[[hosts]]`` names; starts, in this one process, the local API with its egress relay,
the ``[[hosts]]`` tunnels, the ``[[ingress]]`` forwards and log shipping; opens every
``[[secrets]]`` entry with attestation, in parallel; starts the app with the plaintexts
in its environment and files (mode 0400) and its output shipped to the parent line by
line; forwards signals, reaps orphans, and ends with the app's status::

    from pathlib import Path
    import os, sys
    from attested.exec import load_exec_config, run

    config = load_exec_config(Path("/etc/attested/enclave.toml"), os.environ)
    ended = run(config, ["/app/server"], console=(sys.stdout.buffer, sys.stderr.buffer))
    sys.exit(ended.status)

Boundaries: the secrets are opened by KMS against the enclave's attestation, never by a
store (Secrets Manager, SSM and S3 only hold KMS ciphertexts); nothing here decides an
exit status or prints (the CLI does); the app's own output is shipped as written, so it
must not print its secrets. See ``docs/exec.md``.
"""

from __future__ import annotations

from attested.exec._config import (
    ExecConfig,
    ExecSettings,
    HostEntry,
    IngressSpec,
    SecretSpec,
    load_exec_config,
    parse_s3_url,
)
from attested.exec._errors import (
    AppNotStarted,
    SecretFailure,
    SecretsNotOpened,
    SetupError,
    StoreAccessDenied,
    StoreItemMissing,
    StoreUnavailable,
)
from attested.exec._parts import EnclaveParts
from attested.exec._run import StoppedBeforeStart, run
from attested.exec._supervise import AppExit

__all__ = [
    "AppExit",
    "AppNotStarted",
    "EnclaveParts",
    "ExecConfig",
    "ExecSettings",
    "HostEntry",
    "IngressSpec",
    "SecretFailure",
    "SecretSpec",
    "SecretsNotOpened",
    "SetupError",
    "StoppedBeforeStart",
    "StoreAccessDenied",
    "StoreItemMissing",
    "StoreUnavailable",
    "load_exec_config",
    "parse_s3_url",
    "run",
]
