"""The EIF metadata section (version 4): compact JSON of ``EifIdentityInfo``.

Shape written by ``nitro-cli build-enclave`` and ``eif_build``::

    {"ImageName": str, "ImageVersion": str,
     "BuildMetadata": {"BuildTime": str, "BuildTool": str, "BuildToolVersion": str,
                       "OperatingSystem": str, "KernelVersion": str},
     "DockerInfo": <docker inspect JSON or null>, "CustomMetadata": <JSON or null>}

Metadata is **not measured**: no PCR covers it, so anyone can change it without changing
the image's identity. Show it; never base a decision on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from attested import _json
from attested.errors import MalformedError

__all__ = ["EifMetadata", "parse_metadata"]

_BUILD_FIELDS = {
    "BuildTime": "build_time",
    "BuildTool": "build_tool",
    "BuildToolVersion": "build_tool_version",
    "OperatingSystem": "operating_system",
    "KernelVersion": "kernel_version",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class EifMetadata:
    """The metadata section. Unmeasured: informative only.

    Attributes:
        image_name: ``ImageName`` (nitro-cli: the docker image URI before ``:``).
        image_version: ``ImageVersion``.
        build_time: ``BuildMetadata.BuildTime`` (RFC 3339 text, as stored).
        build_tool: ``BuildMetadata.BuildTool``.
        build_tool_version: ``BuildMetadata.BuildToolVersion``.
        operating_system: ``BuildMetadata.OperatingSystem``.
        kernel_version: ``BuildMetadata.KernelVersion``.
        docker_info: ``DockerInfo`` (``docker inspect`` output), ``None`` when null.
        custom: ``CustomMetadata``, ``None`` when null or absent.
        raw: the section bytes.
    """

    image_name: str
    image_version: str
    build_time: str
    build_tool: str
    build_tool_version: str
    operating_system: str
    kernel_version: str
    docker_info: object = field(repr=False)
    custom: object = field(repr=False)
    raw: bytes = field(repr=False)


def _text(mapping: dict[str, object], key: str, *, where: str) -> str:
    value = mapping.get(key)
    if not isinstance(value, str):
        raise MalformedError(f"EIF metadata {where}{key} must be a string")
    return value


def parse_metadata(data: bytes, *, offset: int, max_size: int) -> EifMetadata:
    """Parse the metadata section found at ``offset``.

    Raises:
        MalformedError: not JSON, or not the ``EifIdentityInfo`` shape.
    """
    try:
        value = _json.loads(data, what="EIF metadata", max_size=max_size)
    except MalformedError as exc:
        raise MalformedError(f"{exc} (section data at offset {offset})") from None
    if not isinstance(value, dict):
        raise MalformedError(f"EIF metadata at offset {offset} must be a JSON object")
    build = value.get("BuildMetadata")
    if not isinstance(build, dict):
        raise MalformedError(f"EIF metadata at offset {offset} has no BuildMetadata object")
    fields = {
        name: _text(build, key, where="BuildMetadata.") for key, name in _BUILD_FIELDS.items()
    }
    return EifMetadata(
        image_name=_text(value, "ImageName", where=""),
        image_version=_text(value, "ImageVersion", where=""),
        docker_info=value.get("DockerInfo"),
        custom=value.get("CustomMetadata"),
        raw=data,
        **fields,
    )
