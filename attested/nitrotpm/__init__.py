"""NitroTPM attestation documents on an EC2 instance: :class:`NitroTpmProvider`.

On an instance launched from an Attestable AMI with NitroTPM, the Nitro hypervisor signs
attestation documents about what the instance booted (docs/nitrotpm.md). This package
gets them, as :mod:`attested.enclave` gets an enclave's from the NSM, and hands them to
whatever needs an :class:`~attested.provider.AttestationProvider` (``KmsClient``,
``attested serve``, ``attested exec``), by one of two paths:

``"nitrotpm-tool"``
    AWS's ``nitro-tpm-attest`` utility (``aws-nitro-tpm-tools``), run as a child process
    with the fields in private files (:mod:`._tool`).
``"nitrotpm-device"``
    natively, through the TPM device (``/dev/tpm0``): the NSM request is written to an NV
    index, the AWS vendor command ``TPM2_VENDOR_AWS_NSM_REQUEST`` asks the hypervisor to
    answer it, the answer is read back (:mod:`._native`, :mod:`._tpm2`, :mod:`._device`).

``"nitrotpm"`` (what :func:`open_nitrotpm` opens by default) takes the tool when it is
found and the device otherwise. Whatever the path, the document is parsed with
:attr:`Profile.NITROTPM <attested.document.Profile.NITROTPM>` and must carry exactly the
``nonce``, ``user_data`` and ``public_key`` asked for before it is returned.

Boundaries: this package does not verify the document's signature or chain (the
recipient does: KMS, or :class:`attested.Verifier` with ``Profile.NITROTPM``), does not
read or extend PCRs, and does not touch the enclave NSM. The design is ADR 0131.
"""

from __future__ import annotations

import threading
from typing import Self

from attested.document import Profile, parse_attestation
from attested.errors import AttestationUnavailable, MalformedError
from attested.limits import REQUEST_FIELD_SIZES
from attested.nitrotpm import _tpm2
from attested.nitrotpm._device import TpmDevice
from attested.nitrotpm._native import NativeNitroTpm
from attested.nitrotpm._tool import TOOL_NAME, AttestTool, find_tool

__all__ = [
    "BACKENDS",
    "DEFAULT_DEVICE_PATH",
    "DEFAULT_TIMEOUT",
    "TOOL_NAME",
    "NitroTpmProvider",
    "open_nitrotpm",
]

DEFAULT_DEVICE_PATH = "/dev/tpm0"
"""The TPM itself, not the kernel resource manager ``/dev/tpmrm0``: both known clients send
the vendor command there (docs/nitrotpm.md)."""
DEFAULT_TIMEOUT = 30.0
"""Seconds for one document: the tool's whole run, or each TPM command on the device."""
BACKENDS = ("nitrotpm", "nitrotpm-tool", "nitrotpm-device")
_FIELDS = ("nonce", "user_data", "public_key")


class NitroTpmProvider:
    """An :class:`~attested.provider.AttestationProvider` over an instance's NitroTPM.

    Made by :func:`open_nitrotpm`. Thread-safe: requests on the device path run one at a
    time.
    """

    def __init__(self, source: AttestTool | NativeNitroTpm) -> None:
        self._source = source
        self._closed = threading.Event()

    @property
    def backend(self) -> str:
        """``"nitrotpm-tool"`` or ``"nitrotpm-device"``: the path documents come by."""
        return "nitrotpm-tool" if isinstance(self._source, AttestTool) else "nitrotpm-device"

    @property
    def path(self) -> str:
        """The tool's or the device's path."""
        return self._source.path

    def get_attestation_document(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        """Return a fresh NitroTPM attestation document carrying the given fields.

        Args:
            user_data: at most 512 bytes; ``None`` leaves the field absent.
            nonce: at most 512 bytes; same convention.
            public_key: at most 1024 bytes (DER ``SubjectPublicKeyInfo`` for KMS).

        Returns:
            The COSE_Sign1 document, parsed as a NitroTPM document and checked to carry
            the fields asked for (its signature is not verified here).

        Raises:
            TypeError, ValueError: bad arguments, or the provider is closed.
            AttestationUnavailable: no document (the message says why: the tool failed,
                a TPM command failed, the answer was not a NitroTPM document or carried
                other fields).
        """
        asked = {"user_data": user_data, "nonce": nonce, "public_key": public_key}
        for name, value in asked.items():
            if value is not None and not isinstance(value, bytes):
                raise TypeError(f"{name} must be bytes or None, not {type(value).__name__}")
            if value is not None and len(value) > REQUEST_FIELD_SIZES[name]:
                raise ValueError(f"{name} holds at most {REQUEST_FIELD_SIZES[name]} bytes")
        if self._closed.is_set():
            raise ValueError("the NitroTPM provider is closed")
        document = self._fetch(user_data=user_data, nonce=nonce, public_key=public_key)
        return _checked(document, asked, self.backend)

    def _fetch(
        self, *, user_data: bytes | None, nonce: bytes | None, public_key: bytes | None
    ) -> bytes:
        source = self._source
        if isinstance(source, AttestTool):
            return source.run(user_data=user_data, nonce=nonce, public_key=public_key)
        request = _tpm2.encode_nsm_request(user_data=user_data, nonce=nonce, public_key=public_key)
        try:
            return _tpm2.decode_nsm_response(source.exchange(request))
        except MalformedError as exc:
            raise AttestationUnavailable(
                f"the TPM at {source.path} did not answer as a NitroTPM: {exc}"
            ) from exc

    def close(self) -> None:
        """Refuse further requests; nothing is held open between them. Twice is harmless."""
        self._closed.set()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed.is_set() else ""
        return f"<NitroTpmProvider {self.backend} {self.path!r}{state}>"


def _checked(document: bytes, asked: dict[str, bytes | None], backend: str) -> bytes:
    """Parse ``document`` as a NitroTPM document and check its fields against ``asked``."""
    try:
        parsed = parse_attestation(document, profile=Profile.NITROTPM)
    except MalformedError as exc:
        raise AttestationUnavailable(
            f"the {backend} path returned something that is not a NitroTPM attestation "
            f"document: {exc}"
        ) from exc
    differ = [
        name
        for name in _FIELDS
        # The NSM may write an empty field as null: both mean "nothing asked for".
        if (getattr(parsed, name) or None) != (asked[name] or None)
    ]
    if differ:
        raise AttestationUnavailable(
            f"the {backend} path returned a NitroTPM document whose "
            f"{', '.join(differ)} {'is' if len(differ) == 1 else 'are'} not what was asked "
            "for (another process's document, or a stale one): refused"
        )
    return document


def open_nitrotpm(
    backend: str = "nitrotpm",
    *,
    device_path: str = DEFAULT_DEVICE_PATH,
    tool_path: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> NitroTpmProvider:
    """Open the instance's NitroTPM by the path ``backend`` names.

    Args:
        backend: ``"nitrotpm"`` (the tool when found, else the device),
            ``"nitrotpm-tool"`` or ``"nitrotpm-device"``.
        device_path: the TPM device for the native path (default ``/dev/tpm0``); also
            given to the tool as ``TPM_DEVICE`` when it is not the default.
        tool_path: ``nitro-tpm-attest``'s path; ``None`` or ``""`` searches ``PATH``.
        timeout: seconds for one document.

    Returns:
        An open provider. On the device path, the device has been opened once and found
        to be a NitroTPM; it is opened again for each document.

    Raises:
        ValueError: unknown backend or bad timeout.
        AttestationUnavailable: the tool or the device is missing, cannot be used, or is
            not a NitroTPM (the message says what to install or configure).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r:.40}")
    if not timeout > 0:
        raise ValueError("timeout must be positive")
    if backend != "nitrotpm-device":
        tool = find_tool(tool_path)
        if tool is not None:
            device = device_path if device_path != DEFAULT_DEVICE_PATH else None
            return NitroTpmProvider(AttestTool(tool, timeout=timeout, device_path=device))
        if backend == "nitrotpm-tool":
            raise AttestationUnavailable(
                f"{TOOL_NAME} is not on PATH: install it (sudo yum install aws-nitro-tpm-tools "
                "on Amazon Linux 2023) or give its path (nsm.nitrotpm_tool)"
            )

    native = NativeNitroTpm(lambda: TpmDevice(device_path, timeout=timeout), device_path)
    try:
        native.check()
    except AttestationUnavailable as exc:
        if backend == "nitrotpm-device":
            raise
        raise AttestationUnavailable(f"{exc} ({TOOL_NAME} is not on PATH either)") from exc
    return NitroTpmProvider(native)
