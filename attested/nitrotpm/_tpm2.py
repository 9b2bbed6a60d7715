"""TPM 2.0 commands and responses for the NitroTPM path, as bytes: no I/O here.

Only what getting an attestation document needs (TCG TPM 2.0 Library, Part 2 structures,
Part 3 commands): ``TPM2_GetCapability`` (vendor string, ``TPM_PT_NV_BUFFER_MAX``, the NV
handles in use), ``TPM2_NV_DefineSpace``, ``TPM2_NV_Write``, the AWS vendor command
``TPM2_VENDOR_AWS_NSM_REQUEST``, ``TPM2_NV_Read`` and ``TPM2_NV_UndefineSpace``. Every
command that needs an authorization carries one password session (``TPM_RS_PW``) with an
empty password, as lockboot/vaportpm does on real NitroTPMs
(`ADR 0131 <../../docs/adr/0131-nitrotpm-provider.md>`_).

Builders return a whole command; :func:`parse_response` checks a whole response (tag,
size, response code, the session area) and returns its parameter area. Parsers raise
:class:`~attested.errors.MalformedError` for bytes that are not a well-formed response and
:class:`~attested.errors.TpmError` for an error response code, with the code's name and
meaning in the message.

The NSM request and response inside the NV index are CBOR
(``{"Attestation": {...}}`` / ``{"Attestation": {"document": ...}}`` or
``{"Error": "<code>"}``), as for an enclave's NSM: :func:`encode_nsm_request`,
:func:`decode_nsm_response`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from attested import _cbor
from attested.errors import AttestationUnavailable, MalformedError, TpmError

TPM_ST_NO_SESSIONS = 0x8001
TPM_ST_SESSIONS = 0x8002

TPM_CC_NV_UNDEFINE_SPACE = 0x00000122
TPM_CC_NV_DEFINE_SPACE = 0x0000012A
TPM_CC_NV_WRITE = 0x00000137
TPM_CC_NV_READ = 0x0000014E
TPM_CC_GET_CAPABILITY = 0x0000017A
TPM2_VENDOR_AWS_NSM_REQUEST = 0x20000001

TPM_RH_OWNER = 0x40000001
TPM_RS_PW = 0x40000009

TPM_CAP_HANDLES = 0x00000001
TPM_CAP_TPM_PROPERTIES = 0x00000006
TPM_PT_VENDOR_STRING_1 = 0x00000106
TPM_PT_VENDOR_STRING_2 = 0x00000107
TPM_PT_NV_BUFFER_MAX = 0x0000010D

TPM_ALG_SHA256 = 0x000B
TPMA_NV_AUTHWRITE = 1 << 2
TPMA_NV_AUTHREAD = 1 << 18

NV_INDEX_FIRST = 0x01000000
"""The first NV index handle the provider may use (the owner range, as ``nitro-tpm-attest``)."""
NV_INDEX_LAST = 0x013FFFFF
"""The last one (the end of the TCG registry's range for the TPM owner)."""

HEADER_SIZE = 10
MAX_RESPONSE_SIZE = 4096
"""The largest response accepted: the Linux TPM driver's buffer (``TPM_BUFSIZE``)."""

TPM_RC_SUCCESS = 0x000
TPM_RC_NV_DEFINED = 0x14C

COMMAND_NAMES = {
    TPM_CC_NV_UNDEFINE_SPACE: "TPM2_NV_UndefineSpace",
    TPM_CC_NV_DEFINE_SPACE: "TPM2_NV_DefineSpace",
    TPM_CC_NV_WRITE: "TPM2_NV_Write",
    TPM_CC_NV_READ: "TPM2_NV_Read",
    TPM_CC_GET_CAPABILITY: "TPM2_GetCapability",
    TPM2_VENDOR_AWS_NSM_REQUEST: "TPM2_VENDOR_AWS_NSM_REQUEST",
}

# The response codes (Part 2, 6.6) with what they mean here. Format-zero codes are
# TPM_RC_VER1 (0x100) + n, warnings TPM_RC_WARN (0x900) + n, format-one codes 0x080 + n
# (the handle, parameter or session they concern is in bits 8-11).
_RC_NAMES: dict[int, tuple[str, str]] = {
    0x100: ("TPM_RC_INITIALIZE", "TPM not initialized by TPM2_Startup"),
    0x101: ("TPM_RC_FAILURE", "the TPM is in failure mode"),
    0x103: ("TPM_RC_SEQUENCE", "improper use of a sequence handle"),
    0x120: ("TPM_RC_DISABLED", "the command is disabled"),
    0x121: ("TPM_RC_EXCLUSIVE", "the command failed because audit sequence required exclusivity"),
    0x124: ("TPM_RC_AUTH_TYPE", "authorization handle is not correct for the command"),
    0x125: ("TPM_RC_AUTH_MISSING", "the command requires an authorization session"),
    0x126: ("TPM_RC_POLICY", "the policy failure in math operation or an invalid authPolicy"),
    0x127: ("TPM_RC_PCR", "PCR check fail"),
    0x128: ("TPM_RC_PCR_CHANGED", "PCR have changed since checked"),
    0x12F: ("TPM_RC_AUTH_UNAVAILABLE", "the authValue or authPolicy is not available"),
    0x142: ("TPM_RC_COMMAND_SIZE", "command size does not match the size field"),
    0x143: ("TPM_RC_COMMAND_CODE", "command code not supported (not a NitroTPM?)"),
    0x144: ("TPM_RC_AUTHSIZE", "the authorization size is out of range"),
    0x145: (
        "TPM_RC_AUTH_CONTEXT",
        "use of an authorization session with a command that takes none",
    ),
    0x146: ("TPM_RC_NV_RANGE", "NV offset + size is out of range"),
    0x147: ("TPM_RC_NV_SIZE", "requested allocation size is larger than allowed"),
    0x148: ("TPM_RC_NV_LOCKED", "NV access locked"),
    0x149: ("TPM_RC_NV_AUTHORIZATION", "NV access authorization fails in command actions"),
    0x14A: ("TPM_RC_NV_UNINITIALIZED", "an NV index is used before being initialized"),
    0x14B: ("TPM_RC_NV_SPACE", "insufficient space for NV allocation"),
    0x14C: ("TPM_RC_NV_DEFINED", "the NV index is already defined"),
    0x153: ("TPM_RC_NEEDS_TEST", "the TPM needs a self-test"),
    0x154: ("TPM_RC_NO_RESULT", "the command could not produce a result"),
    0x082: ("TPM_RC_ATTRIBUTES", "inconsistent attributes"),
    0x083: ("TPM_RC_HASH", "hash algorithm not supported or not appropriate"),
    0x084: ("TPM_RC_VALUE", "value is out of range or is not correct for the context"),
    0x085: ("TPM_RC_HIERARCHY", "hierarchy is not enabled or is not correct for the use"),
    0x08B: ("TPM_RC_HANDLE", "the handle is not correct for the use"),
    0x08E: ("TPM_RC_AUTH_FAIL", "the authorization HMAC check failed and the DA counter grew"),
    0x095: ("TPM_RC_SIZE", "structure is the wrong size"),
    0x097: ("TPM_RC_TAG", "incorrect structure tag"),
    0x09A: ("TPM_RC_INSUFFICIENT", "the TPM was unable to unmarshal a value (too few octets)"),
    0x0A1: ("TPM_RC_RESERVED_BITS", "reserved bits not set to zero as required"),
    0x0A2: ("TPM_RC_BAD_AUTH", "authorization failure without DA implications"),
    0x902: ("TPM_RC_OBJECT_MEMORY", "out of memory for object contexts"),
    0x903: ("TPM_RC_SESSION_MEMORY", "out of memory for session contexts"),
    0x904: ("TPM_RC_MEMORY", "out of shared object/session memory"),
    0x908: ("TPM_RC_YIELDED", "the TPM has suspended operation on the command"),
    0x909: ("TPM_RC_CANCELED", "the command was canceled"),
    0x90A: ("TPM_RC_TESTING", "the TPM is performing self-tests"),
    0x920: ("TPM_RC_NV_RATE", "the TPM is rate-limiting accesses to prevent wearout of NV"),
    0x921: (
        "TPM_RC_LOCKOUT",
        "authorizations for objects subject to DA protection are not allowed",
    ),
    0x922: ("TPM_RC_RETRY", "the TPM was not able to start the command"),
    0x923: (
        "TPM_RC_NV_UNAVAILABLE",
        "the command may require writing of NV and NV is not accessible",
    ),
}

_HEADER = struct.Struct(">HII")
_PASSWORD_SESSION = struct.pack(">IIHBH", 9, TPM_RS_PW, 0, 0, 0)
"""authorizationSize 9, then TPMS_AUTH_COMMAND: TPM_RS_PW, no nonce, no attributes,
an empty password (the NV index and the owner hierarchy have empty auth values)."""

MAX_NSM_RESPONSE = 16384
MAX_CBOR_DEPTH = 4


def describe_rc(code: int) -> str:
    """Name a TPM response code and say what it means, e.g. ``"TPM_RC_NV_DEFINED (0x14c)..."``.

    Args:
        code: the ``responseCode`` of a response header.

    Returns:
        One line of text; unknown codes are described by their format.
    """
    if code & 0x080:  # format one: the error is in bits 0-5, the location in bits 6-11
        base = 0x080 | (code & 0x3F)
        number = (code >> 8) & 0xF
        if code & 0x040:
            where = f" (parameter {number})"
        elif number & 0x8:
            where = f" (session {number & 0x7})"
        else:
            where = f" (handle {number})" if number else ""
        name, meaning = _RC_NAMES.get(base, (f"TPM_RC format-one error 0x{base:03x}", "see Part 2"))
        return f"{name} (0x{code:x}){where}: {meaning}"
    if code & 0x400:
        return f"vendor-defined TPM response code 0x{code:x}"
    if not code & 0x100:
        return f"TPM 1.2 response code 0x{code:x} (not a TPM 2.0 device?)"
    base = code & 0x97F
    name, meaning = _RC_NAMES.get(base, (f"TPM_RC 0x{base:03x}", "see TPM 2.0 Part 2, 6.6"))
    return f"{name} (0x{code:x}): {meaning}"


def _command(tag: int, code: int, body: bytes) -> bytes:
    return _HEADER.pack(tag, HEADER_SIZE + len(body), code) + body


def _tpm2b(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("a TPM2B holds at most 65535 bytes")
    return struct.pack(">H", len(data)) + data


def get_capability(capability: int, prop: int, count: int) -> bytes:
    """``TPM2_GetCapability(capability, property, propertyCount)``."""
    return _command(
        TPM_ST_NO_SESSIONS, TPM_CC_GET_CAPABILITY, struct.pack(">III", capability, prop, count)
    )


def nv_define_space(index: int, size: int) -> bytes:
    """``TPM2_NV_DefineSpace`` of an ordinary index in the owner hierarchy.

    Empty auth value, ``TPMA_NV_AUTHREAD | TPMA_NV_AUTHWRITE``, name algorithm SHA-256,
    no policy: what the vendor command reads and writes with a password session.
    """
    public = struct.pack(
        ">IHIHH", index, TPM_ALG_SHA256, TPMA_NV_AUTHREAD | TPMA_NV_AUTHWRITE, 0, size
    )
    body = struct.pack(">I", TPM_RH_OWNER) + _PASSWORD_SESSION + _tpm2b(b"") + _tpm2b(public)
    return _command(TPM_ST_SESSIONS, TPM_CC_NV_DEFINE_SPACE, body)


def nv_write(index: int, data: bytes, offset: int) -> bytes:
    """``TPM2_NV_Write`` of ``data`` at ``offset``, authorized by the index itself."""
    body = struct.pack(">II", index, index) + _PASSWORD_SESSION + _tpm2b(data)
    return _command(TPM_ST_SESSIONS, TPM_CC_NV_WRITE, body + struct.pack(">H", offset))


def nv_read(index: int, size: int, offset: int) -> bytes:
    """``TPM2_NV_Read`` of ``size`` bytes at ``offset``, authorized by the index itself."""
    body = struct.pack(">II", index, index) + _PASSWORD_SESSION + struct.pack(">HH", size, offset)
    return _command(TPM_ST_SESSIONS, TPM_CC_NV_READ, body)


def nv_undefine_space(index: int) -> bytes:
    """``TPM2_NV_UndefineSpace`` of ``index``, authorized by the owner hierarchy."""
    body = struct.pack(">II", TPM_RH_OWNER, index) + _PASSWORD_SESSION
    return _command(TPM_ST_SESSIONS, TPM_CC_NV_UNDEFINE_SPACE, body)


def nsm_request(index: int) -> bytes:
    """The AWS vendor command: the hypervisor answers the NSM request held in ``index``.

    Handles as ``TPM2_NV_Read`` has them (auth handle, index), no parameters.
    """
    body = struct.pack(">II", index, index) + _PASSWORD_SESSION
    return _command(TPM_ST_SESSIONS, TPM2_VENDOR_AWS_NSM_REQUEST, body)


@dataclass(frozen=True, slots=True)
class Header:
    """A response header: ``tag``, ``size`` (the whole response) and ``code``."""

    tag: int
    size: int
    code: int


def parse_header(data: bytes) -> Header:
    """Read a response header and check its size field before the rest is read.

    Raises:
        MalformedError: fewer than 10 bytes, an unknown tag, or a size under 10 or over
            :data:`MAX_RESPONSE_SIZE`.
    """
    if len(data) < HEADER_SIZE:
        raise MalformedError(f"TPM response is {len(data)} bytes, shorter than its header")
    tag, size, code = _HEADER.unpack_from(data)
    if tag not in (TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS):
        raise MalformedError(f"TPM response has tag 0x{tag:04x}, not TPM_ST_(NO_)SESSIONS")
    if size < HEADER_SIZE or size > MAX_RESPONSE_SIZE:
        raise MalformedError(
            f"TPM response says it is {size} bytes; accepted are {HEADER_SIZE} to "
            f"{MAX_RESPONSE_SIZE}"
        )
    return Header(tag, size, code)


def parse_response(data: bytes, command: bytes) -> bytes:
    """Check a whole response to ``command`` and return its parameter area.

    For a command with sessions, the response's ``parameterSize`` and one password
    session's answer (empty nonce, attributes, empty HMAC) are checked and removed. None of
    the commands here returns handles.

    Raises:
        TpmError: the response code is not ``TPM_RC_SUCCESS``.
        MalformedError: the bytes are not a well-formed response to ``command``.
    """
    header = parse_header(data)
    name = command_name(command)
    if header.size != len(data):
        raise MalformedError(
            f"{name} response says it is {header.size} bytes but {len(data)} arrived"
        )
    if header.code != TPM_RC_SUCCESS:
        raise TpmError(
            f"the TPM refused {name}: {describe_rc(header.code)}", command=name, code=header.code
        )
    sessions = command[:2] == struct.pack(">H", TPM_ST_SESSIONS)
    expected_tag = TPM_ST_SESSIONS if sessions else TPM_ST_NO_SESSIONS
    if header.tag != expected_tag:
        raise MalformedError(f"{name} response has tag 0x{header.tag:04x}")
    body = data[HEADER_SIZE:]
    if not sessions:
        return body
    if len(body) < 4:
        raise MalformedError(f"{name} response has no parameterSize")
    (size,) = struct.unpack_from(">I", body)
    if size > len(body) - 4:
        raise MalformedError(f"{name} response's parameterSize {size} overruns the response")
    parameters, auth = body[4 : 4 + size], body[4 + size :]
    if auth != b"\x00\x00\x01\x00\x00" and auth != b"\x00\x00\x00\x00\x00":
        raise MalformedError(f"{name} response's session area is not one password session")
    return parameters


def command_name(command: bytes) -> str:
    """The name of the command in ``command``'s header (for messages)."""
    if len(command) < HEADER_SIZE:
        return "TPM command"
    (code,) = struct.unpack_from(">I", command, 6)
    return COMMAND_NAMES.get(code, f"TPM command 0x{code:08x}")


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.offset, self.what = data, 0, what

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.data):
            raise MalformedError(f"{self.what} is truncated at byte {self.offset}")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def end(self) -> None:
        if self.offset != len(self.data):
            raise MalformedError(
                f"{self.what} has {len(self.data) - self.offset} bytes after its fields"
            )


def parse_properties(parameters: bytes) -> tuple[dict[int, int], bool]:
    """The ``TPML_TAGGED_TPM_PROPERTY`` of a ``TPM_CAP_TPM_PROPERTIES`` answer.

    Returns:
        The properties as ``{property: value}`` and ``moreData``.

    Raises:
        MalformedError: not such an answer.
    """
    reader = _Reader(parameters, "TPM2_GetCapability(TPM_PROPERTIES) response")
    more = reader.u8()
    if reader.u32() != TPM_CAP_TPM_PROPERTIES:
        raise MalformedError("TPM2_GetCapability answered another capability")
    count = reader.u32()
    if count > 256:
        raise MalformedError(f"TPM2_GetCapability returned {count} properties, over 256")
    properties = {}
    for _ in range(count):
        prop = reader.u32()
        properties[prop] = reader.u32()
    reader.end()
    return properties, bool(more)


def parse_handles(parameters: bytes) -> tuple[list[int], bool]:
    """The ``TPML_HANDLE`` of a ``TPM_CAP_HANDLES`` answer: the handles and ``moreData``.

    Raises:
        MalformedError: not such an answer.
    """
    reader = _Reader(parameters, "TPM2_GetCapability(HANDLES) response")
    more = reader.u8()
    if reader.u32() != TPM_CAP_HANDLES:
        raise MalformedError("TPM2_GetCapability answered another capability")
    count = reader.u32()
    if count > 1024:
        raise MalformedError(f"TPM2_GetCapability returned {count} handles, over 1024")
    handles = [reader.u32() for _ in range(count)]
    reader.end()
    return handles, bool(more)


def parse_nv_read(parameters: bytes, size: int) -> bytes:
    """The ``TPM2B_MAX_NV_BUFFER`` of a ``TPM2_NV_Read`` answer, which must be ``size`` bytes.

    Raises:
        MalformedError: not such an answer, or another length than asked for.
    """
    reader = _Reader(parameters, "TPM2_NV_Read response")
    data = reader.take(reader.u16())
    reader.end()
    if len(data) != size:
        raise MalformedError(f"TPM2_NV_Read returned {len(data)} bytes; {size} were asked for")
    return data


def vendor_string(properties: dict[int, int]) -> str:
    """The vendor string from ``TPM_PT_VENDOR_STRING_1`` and ``_2`` (``"NitroTPM"``)."""
    raw = b"".join(
        properties.get(p, 0).to_bytes(4, "big")
        for p in (TPM_PT_VENDOR_STRING_1, TPM_PT_VENDOR_STRING_2)
    )
    return raw.rstrip(b"\x00").decode("ascii", "replace")


def encode_nsm_request(
    *, user_data: bytes | None, nonce: bytes | None, public_key: bytes | None
) -> bytes:
    """The NSM ``Attestation`` request, CBOR as ``aws-nitro-enclaves-nsm-api`` encodes it."""
    return _cbor.encode(
        {"Attestation": {"user_data": user_data, "nonce": nonce, "public_key": public_key}}
    )


def decode_nsm_response(data: bytes) -> bytes:
    """The document in an NSM response read back from the NV index.

    Bytes after the CBOR item (padding, the request's leftovers) are ignored.

    Returns:
        The document (not parsed).

    Raises:
        MalformedError: not an NSM response.
        AttestationUnavailable: the NSM answered with an error.
    """
    value = _cbor.decode(
        data,
        what="NSM response",
        max_size=MAX_NSM_RESPONSE,
        max_depth=MAX_CBOR_DEPTH,
        trailing=True,
    )
    if not isinstance(value, dict) or len(value) != 1:
        raise MalformedError("NSM response is not a map of one entry")
    ((kind, body),) = value.items()
    if kind == "Error":
        raise AttestationUnavailable(f"the NitroTPM's NSM answered with the error {body!r:.60}")
    if kind != "Attestation" or not isinstance(body, dict) or set(body) != {"document"}:
        raise MalformedError(f"NSM response is {kind!r:.40}, not an Attestation document")
    document = body["document"]
    if not isinstance(document, bytes) or not document:
        raise MalformedError("NSM response's document is not a non-empty byte string")
    return document
