"""How much enclave memory an image needs to be launched, by nitro-cli's own rule (pure).

``nitro-cli run-enclave`` refuses ``--memory M`` when ``4 * EIF file size > M MiB``
(aws-nitro-enclaves-cli, ``src/enclave_proc/resource_manager.rs``,
``EnclaveHandle::new``: ``ENCLAVE_MEMORY_EIF_SIZE_RATIO * eif_size > requested_mem``,
with ``ENCLAVE_MEMORY_EIF_SIZE_RATIO = 4``; error E26, "Insufficient memory
requested"). The kernel driver refuses to start an enclave under 64 MiB
(``NE_MIN_ENCLAVE_MEM_SIZE``, ``drivers/virt/nitro_enclaves/ne_misc_dev.c``,
``ne_start_enclave_ioctl``). The image is unpacked into that memory at boot: an enclave
given about its file size fails early, for example with "Could not open /env file".
"""

from __future__ import annotations

__all__ = [
    "DRIVER_MINIMUM_MIB",
    "EIF_SIZE_RATIO",
    "MINIMUM_MEMORY_RULE",
    "minimum_memory_mib",
]

EIF_SIZE_RATIO = 4
"""nitro-cli's ``ENCLAVE_MEMORY_EIF_SIZE_RATIO``."""
DRIVER_MINIMUM_MIB = 64
"""The Nitro Enclaves driver's ``NE_MIN_ENCLAVE_MEM_SIZE``, in MiB."""
MINIMUM_MEMORY_RULE = (
    "nitro-cli run-enclave refuses --memory below 4 x the EIF file size "
    "(aws-nitro-enclaves-cli src/enclave_proc/resource_manager.rs, EnclaveHandle::new, "
    "ENCLAVE_MEMORY_EIF_SIZE_RATIO = 4); the Nitro Enclaves driver refuses less than "
    "64 MiB (NE_MIN_ENCLAVE_MEM_SIZE, drivers/virt/nitro_enclaves/ne_misc_dev.c)"
)
_MIB = 1024 * 1024


def minimum_memory_mib(file_size: int) -> int:
    """The smallest ``--memory`` (MiB) nitro-cli and the driver accept for an image.

    ``max(ceil(4 * file_size / MiB), 64)``: exactly nitro-cli's comparison
    (``4 * eif_size > memory_mib << 20`` is refused), then the driver's floor. The app's
    own needs (heap, tmpfs files) come on top.

    Args:
        file_size: the EIF file's size in bytes.

    Raises:
        ValueError: ``file_size`` is negative.
    """
    if file_size < 0:
        raise ValueError("a file size cannot be negative")
    return max(-(-EIF_SIZE_RATIO * file_size // _MIB), DRIVER_MINIMUM_MIB)
