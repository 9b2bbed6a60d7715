"""``nsm.backend = "nitrotpm"``: open_provider, the service and exec configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from attested.enclave import PROVIDER_BACKENDS, open_provider
from attested.errors import ConfigError
from attested.nitrotpm import NitroTpmProvider
from attested.service import load_config
from tests.nitrotpm.conftest import Source
from tests.nitrotpm.standin import PtyTpm, write_tool

ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_open_provider_knows_the_three_nitrotpm_backends(
    pty_tpm: PtyTpm, tmp_path: Path, source: Source
) -> None:
    assert {"nitrotpm", "nitrotpm-tool", "nitrotpm-device"} <= set(PROVIDER_BACKENDS)
    with open_provider("nitrotpm-device", nitrotpm_device=pty_tpm.path) as provider:
        assert isinstance(provider, NitroTpmProvider)
        assert provider.backend == "nitrotpm-device"
        provider.get_attestation_document(nonce=b"n")
    tool = write_tool(tmp_path, "ok", source.get_attestation_document(nonce=b"n"))
    with open_provider("nitrotpm", nitrotpm_tool=str(tool)) as provider:
        assert provider.backend == "nitrotpm-tool"
        provider.get_attestation_document(nonce=b"n")


@pytest.mark.parametrize(
    ("backend", "options", "message"),
    [
        ("auto", {"nitrotpm_device": "/dev/tpm0"}, "apply to the 'nitrotpm' backends only"),
        ("simulated", {"nitrotpm_tool": "/usr/bin/x"}, "apply to the 'nitrotpm' backends only"),
        ("nitrotpm", {"state_dir": "/tmp/x"}, "apply to the simulated backends only"),
        ("nitrotpm-device", {"nitrotpm_tool": "/usr/bin/x"}, "does not apply to"),
    ],
)
def test_options_for_another_backend_are_refused(
    backend: str, options: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        open_provider(backend, **options)  # type: ignore[arg-type]


def _config(tmp_path: Path, nsm: str, env: dict[str, str] | None = None) -> object:
    path = tmp_path / "service.toml"
    path.write_text(f'[nsm]\n{nsm}\n[kms]\nallowed_keys = ["{ARN}"]\n')
    return load_config(path, env or {})


def test_the_service_config_takes_the_nitrotpm_keys(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        'backend = "nitrotpm"\nnitrotpm_device = "/dev/tpm1"\n'
        'nitrotpm_tool = "/opt/aws/bin/nitro-tpm-attest"',
    )
    assert config.nsm_backend == "nitrotpm"  # type: ignore[attr-defined]
    assert config.nsm_nitrotpm_device == "/dev/tpm1"  # type: ignore[attr-defined]
    assert config.nsm_nitrotpm_tool == "/opt/aws/bin/nitro-tpm-attest"  # type: ignore[attr-defined]
    defaults = _config(tmp_path, 'backend = "nitrotpm-device"')
    assert defaults.nsm_nitrotpm_device == ""  # type: ignore[attr-defined]


def test_the_environment_overrides_the_nitrotpm_keys(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        'backend = "auto"',
        {
            "ATTESTED_NSM_BACKEND": "nitrotpm-tool",
            "ATTESTED_NSM_NITROTPM_DEVICE": "/dev/tpm9",
            "ATTESTED_NSM_NITROTPM_TOOL": "/usr/local/bin/nitro-tpm-attest",
        },
    )
    assert config.nsm_backend == "nitrotpm-tool"  # type: ignore[attr-defined]
    assert config.nsm_nitrotpm_device == "/dev/tpm9"  # type: ignore[attr-defined]
    assert config.nsm_nitrotpm_tool == "/usr/local/bin/nitro-tpm-attest"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("nsm", "key", "message"),
    [
        ('backend = "auto"\nnitrotpm_device = "/dev/tpm0"', "nsm.nitrotpm_device", "applies only"),
        ('backend = "simulated"\nnitrotpm_tool = "/bin/t"', "nsm.nitrotpm_tool", "applies only"),
        (
            'backend = "nitrotpm-device"\nnitrotpm_tool = "/bin/t"',
            "nsm.nitrotpm_tool",
            '"nitrotpm"',
        ),
        (
            'backend = "nitrotpm"\nnitrotpm_device = "tpm0"',
            "nsm.nitrotpm_device",
            "not an absolute",
        ),
        ('backend = "nitrotpm"\nnitrotpm_tool = "bin/t"', "nsm.nitrotpm_tool", "not an absolute"),
        ('backend = "nitro"', "nsm.backend", "nitrotpm-device"),
    ],
)
def test_misplaced_or_bad_nitrotpm_keys_are_refused(
    tmp_path: Path, nsm: str, key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, nsm)
    assert key in str(caught.value)
    assert message in str(caught.value)


def test_serve_and_exec_open_the_configured_nitrotpm(tmp_path: Path, pty_tpm: PtyTpm) -> None:
    from attested.service import open_attestation  # what serve and exec both call

    config = _config(tmp_path, f'backend = "nitrotpm-device"\nnitrotpm_device = "{pty_tpm.path}"')
    with open_attestation(config) as provider:  # type: ignore[arg-type]
        assert isinstance(provider, NitroTpmProvider)
        assert provider.backend == "nitrotpm-device"
        assert provider.path == pty_tpm.path
        provider.get_attestation_document(nonce=b"exec")
