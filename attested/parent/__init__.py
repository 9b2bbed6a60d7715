"""``attested parent``: one process on the parent instance for everything an enclave needs.

An enclave has only vsock. On the parent, one configuration file and one process serve
it: the egress relay with its allowlist (deny by default), the role credentials
(refreshed from IMDS per request, handed only to the enclave's CID), the ingress
forwards, and the sink for its log lines. See ``docs/parent.md``::

    from attested.parent import Parent, load_parent_config

    config = load_parent_config("/etc/attested/parent.toml")  # ConfigError lists problems
    with Parent(config) as parent:
        print(parent.listeners)   # {"egress": Address(...), "credentials": ..., ...}
        ...                       # leaving the block stops everything

The command line is ``attested parent --config FILE [--ready-file PATH] [--check]``.
:class:`CredentialServer` (with :func:`imds_source` or :func:`botocore_source`) runs on its
own too; ``attested.kms.credentials`` re-exports them, deprecated, for one release.
"""

from __future__ import annotations

from attested.errors import ConfigError
from attested.parent._config import (
    CredentialsConfig,
    EgressConfig,
    EgressForwardConfig,
    IngressConfig,
    LogsConfig,
    MetricsConfig,
    ParentConfig,
    load_parent_config,
    parse_parent_config,
)
from attested.parent._credentials import (
    DEFAULT_MAX_CONNECTIONS,
    CredentialServer,
    CredentialSource,
    botocore_source,
    imds_source,
)
from attested.parent._parent import Parent

__all__ = [
    "ConfigError",
    "CredentialServer",
    "CredentialSource",
    "CredentialsConfig",
    "DEFAULT_MAX_CONNECTIONS",
    "EgressConfig",
    "EgressForwardConfig",
    "IngressConfig",
    "LogsConfig",
    "MetricsConfig",
    "Parent",
    "ParentConfig",
    "botocore_source",
    "imds_source",
    "load_parent_config",
    "parse_parent_config",
]
