"""nsm: a binding to the AWS Nitro Secure Module (libnsm or the /dev/nsm ioctl).

Standard library only; importable without the ``attested`` package and on machines
without libnsm (the library is loaded only when a device is opened).
"""

from __future__ import annotations

__all__: list[str] = []
