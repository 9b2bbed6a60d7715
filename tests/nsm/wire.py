"""The NSM's side of the ioctl, in Python, for driving nsm's message backend.

It decodes requests and encodes replies with cbor2 (an independent CBOR
implementation, so the binding's own codec is checked against it), and keeps its PCR
state in a SimulatedNsm. Replies follow the NSM's externally tagged enums, errors as
``{"Error": "<variant>"}``.
"""

from __future__ import annotations

from typing import Any

import cbor2

from attested.simulator import SimulatedNsm
from nsm.errors import NsmError


class WireNsm:
    """A Transport for ``nsm._ioctl.MessageBackend``: CBOR in, CBOR out."""

    def __init__(self, simulator: SimulatedNsm, *, random_chunk: int = 256) -> None:
        self.simulator = simulator
        self.random_chunk = random_chunk
        self.requests: list[Any] = []
        self.raw_requests: list[bytes] = []
        self.closed = 0
        self.override: bytes | None = None  # a canned reply for the next request

    def exchange(self, request: bytes) -> bytes:
        self.raw_requests.append(request)
        message = cbor2.loads(request)
        self.requests.append(message)
        if self.override is not None:
            reply, self.override = self.override, None
            return reply
        try:
            return cbor2.dumps(self._handle(message))
        except NsmError as exc:
            name = exc.code.wire_name if exc.code is not None else "InternalError"
            return cbor2.dumps({"Error": name})

    def close(self) -> None:
        self.closed += 1

    def _handle(self, message: Any) -> Any:
        sim = self.simulator
        if message == "DescribeNSM":
            d = sim.describe()
            return {
                "DescribeNSM": {
                    "version_major": d.version[0],
                    "version_minor": d.version[1],
                    "version_patch": d.version[2],
                    "module_id": d.module_id,
                    "max_pcrs": d.max_pcrs,
                    "locked_pcrs": list(d.locked_pcrs),
                    "digest": d.digest.name,
                }
            }
        if message == "GetRandom":
            return {"GetRandom": {"random": sim.get_random(self.random_chunk)}}
        ((name, fields),) = message.items()
        if name == "Attestation":
            document = sim.get_attestation_document(**fields)
            return {"Attestation": {"document": document}}
        if name == "DescribePCR":
            info = sim.describe_pcr(fields["index"])
            return {"DescribePCR": {"lock": info.locked, "data": info.value}}
        if name == "ExtendPCR":
            return {"ExtendPCR": {"data": sim.extend_pcr(fields["index"], fields["data"])}}
        if name == "LockPCR":
            sim.lock_pcr(fields["index"])
            return "LockPCR"
        if name == "LockPCRs":
            sim.lock_pcrs(fields["range"])
            return "LockPCRs"
        return {"Error": "InvalidOperation"}
