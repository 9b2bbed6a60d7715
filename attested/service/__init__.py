"""The enclave secrets service (``attested serve``): KMS with attestation behind a local API.

Applications inside the enclave ask over a Unix domain socket (HTTP/JSON, see
``attested/service/openapi.yaml`` and ``docs/service.md``); the service calls KMS with a
fresh attestation document per request and opens KMS's answer inside the enclave::

    from pathlib import Path
    import os
    from attested.service import Service, load_config

    config = load_config(Path("/etc/attested/service.toml"), os.environ)
    with Service(config) as service:
        print(service.listeners)        # {"unix": Address(unix:/run/attested/api.sock)}
        ...                             # serve until told to stop

:func:`load_config` raises :class:`~attested.errors.ConfigError` listing every problem.
"""

from __future__ import annotations

from attested.errors import ConfigError
from attested.service._config import ENV_VARS, OPERATIONS, ServiceConfig, load_config
from attested.service._errors import ERROR_CODES
from attested.service._service import Service, open_attestation, open_credentials

__all__ = [
    "ConfigError",
    "ENV_VARS",
    "ERROR_CODES",
    "OPERATIONS",
    "Service",
    "ServiceConfig",
    "load_config",
    "open_attestation",
    "open_credentials",
]
