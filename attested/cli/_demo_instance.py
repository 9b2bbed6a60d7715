"""The NitroTPM flow on one machine: what ``attested demo --nitrotpm`` runs.

An EC2 instance launched from an Attestable AMI gets its secret from KMS the way an
enclave does, with a NitroTPM document in ``Recipient`` instead of an NSM one. Here:

* "AWS": the KMS emulator (in this process, over HTTPS with a throwaway CA), trusting the
  simulator's root, evaluating the ``kms:RecipientAttestation:NitroTPMPCR<n>`` keys;
* the AMI build: a ``tpm_pcr.json`` as ``nitro-tpm-pcr-compute`` writes it, and the key
  policy ``keypolicy generate --nitrotpm`` makes from it;
* two simulated instances, each an ``attested serve`` child process with
  ``nsm.backend = "simulated-nitrotpm"`` and the instance role's credentials: instance A
  booted the measured AMI, instance B another one (another PCR4).

There is no parent and no vsock: on an instance the app and KMS talk over the network.
The steps and the clean-up are :mod:`attested.cli._demo_system`'s.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping

from attested import pcr
from attested.cli._demo_system import (
    ACCOUNT,
    ADMIN,
    PRODUCER,
    REGION,
    SECRET,
    DemoFailure,
    _b64,
    _check_logs,
    _child_env,
    _create_key,
    _decrypt_in,
    _Demo,
    _encrypt_secret,
    _parent_refused,
    _short,
    _start_aws,
    _toml_str,
    _write_linted,
    api_call,
)
from attested.document import Profile
from attested.errors import MalformedError
from attested.keypolicy import (
    MeasurementSet,
    generate_nitrotpm_policy,
    parse_measurements,
)
from attested.policy import Policy
from attested.verify import Verifier

INSTANCE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/attested-instance"
_AMI = pcr.measure(b"attested demo Attestable AMI v1 (UKI)")
_OTHER_AMI = pcr.measure(b"attested demo Attestable AMI v1, rebuilt with a backdoor")


def run(d: _Demo) -> None:
    """The NitroTPM demonstration's steps (``d.parent_role`` is the instance role)."""
    d.p.title("attested demo --nitrotpm: an EC2 instance's secret flow on one machine")
    d.p.say(
        "No AWS account, no Nitro hardware: the KMS emulator plays AWS KMS and a simulated\n"
        "NitroTPM plays the TPM of an instance launched from an Attestable AMI.\n"
        f"Working directory: {d.base}"
    )
    _start_aws(d)
    ami = _build_ami(d)
    _make_instance_key(d, ami)
    _encrypt_secret(d, "the instance")
    d.p.step("The instance role itself cannot decrypt it without a NitroTPM document")
    d.p.say(f"Decrypt without an attestation document: refused ({_parent_refused(d)})")
    _boot_instance_a(d, ami)
    _instance_b_is_refused(d, ami)
    _stop_instances(d, ("instance-b", "instance-a"))


def _build_ami(d: _Demo) -> MeasurementSet:
    d.p.step("The AMI build measures the image: tpm_pcr.json (nitro-tpm-pcr-compute)")
    values = {"PCR4": _AMI, "PCR7": pcr.NITROTPM_PCR7_SECURE_BOOT_OFF, "PCR12": pcr.ZERO}
    measurements = {"HashAlgorithm": "SHA384"} | {k: v.hex() for k, v in values.items()}
    path = d.base / "tpm_pcr.json"
    path.write_text(json.dumps({"Measurements": measurements}, indent=2) + "\n")
    (ami,) = parse_measurements(path.read_bytes(), source=path.name, profile=Profile.NITROTPM)
    d.p.say(
        f"{path.name}, the Attestable AMI's measurements:\n"
        f"  PCR4 (the boot images)          = {_short(_AMI)}\n"
        "  PCR12 (the kernel command line) = 0...0 (the UKI's own)\n"
        "  PCR7 (the Secure Boot policy)   = the Secure-Boot-off value"
    )
    return ami


def _make_instance_key(d: _Demo, ami: MeasurementSet) -> None:
    d.p.step("Generate a key policy for that AMI (`attested keypolicy generate --nitrotpm`)")
    policy = generate_nitrotpm_policy(
        account=ACCOUNT,
        instance_role=INSTANCE_ROLE,
        admin_role=ADMIN,
        measurements=[ami],
        encryptors=[PRODUCER],
        deny_without_attestation=True,
    )
    path = _write_linted(d, policy)
    d.p.say(
        f"{path.name}: {len(policy['Statement'])} statements, no linter errors\n"
        "  the instance role may Decrypt only with a NitroTPM document whose PCR4 and\n"
        "  PCR12 match (kms:RecipientAttestation:NitroTPMPCR4/12; PCR4 alone would admit\n"
        "  the AMI booted with a tampered kernel command line)"
    )
    _create_key(d, policy)
    d.p.say(f"the key administrator created the key:\n  {d.key_arn}")


def _start_instance(d: _Demo, name: str, pcrs: Mapping[int, bytes]) -> str:
    """``attested serve`` on a simulated instance; its API socket."""
    directory = d.base / name
    directory.mkdir(mode=0o700)
    socket_path = str(directory / "api.sock")
    pcr_table = ", ".join(f'"{i}" = "{v.hex()}"' for i, v in sorted(pcrs.items()))
    config = directory / "serve.toml"
    config.write_text(
        f"# attested serve on simulated {name} (an EC2 instance, not an enclave)\n"
        f'region = "{REGION}"\n'
        f"\n[api]\nunix = {_toml_str(socket_path)}\n"
        '\n[nsm]\nbackend = "simulated-nitrotpm"\n'
        f"simulated_state = {_toml_str(str(d.state))}\n"
        f"simulated_pcrs = {{{pcr_table}}}\n"
        f"\n[kms]\nendpoint_url = {_toml_str(d.direct)}\n"
        f"ca_bundle = {_toml_str(str(d.ca))}\n"
        f"allowed_keys = [{_toml_str(d.key_arn)}]\n"
        '\n[credentials]\nsource = "environment"\n'
    )
    # The instance role's credentials, as the instance profile gives them: only to serve.
    role = d.parent_role
    env = _child_env(
        {"AWS_ACCESS_KEY_ID": role.access_key_id, "AWS_SECRET_ACCESS_KEY": role.secret_access_key}
    )
    ready = directory / "ready.json"
    d.processes.start(
        name,
        ["serve", "--config", str(config), "--ready-file", str(ready)],
        env=env,
        ready_file=ready,
    )
    return socket_path


def _boot_pcrs(ami: MeasurementSet, pcr4: bytes) -> dict[int, bytes]:
    return {**ami.pcrs, 4: pcr4, 0: pcr.measure(b"EC2 firmware"), 1: pcr.measure(b"EC2 config")}


def _boot_instance_a(d: _Demo, ami: MeasurementSet) -> str:
    d.p.step("Launch simulated instance A from the measured AMI, running `attested serve`")
    socket_path = _start_instance(d, "instance-a", _boot_pcrs(ami, _AMI))
    d.p.say(
        f"local API     unix:{socket_path}\n"
        'attestation   nsm.backend = "simulated-nitrotpm" (on EC2: "nitrotpm")\n'
        "credentials   the instance role's (from the instance profile on EC2)"
    )

    d.p.step("A relying party checks instance A's NitroTPM document")
    nonce = secrets.token_bytes(32)
    status, reply = api_call(socket_path, "/v1/attestation", {"nonce": _b64(nonce)})
    if status != 200:
        raise DemoFailure(f"/v1/attestation answered {status}: {reply}")
    document = base64.b64decode(str(reply["document"]))
    assert d.trust_root is not None  # noqa: S101 - set by _start_aws
    verifier = Verifier(trust_root=d.trust_root, profile=Profile.NITROTPM)
    verified = verifier.verify(document, policy=Policy(pcrs={4: _AMI, 12: pcr.ZERO}, nonce=nonce))
    try:
        Verifier(trust_root=d.trust_root).verify(document, policy=Policy(pcrs={4: _AMI}))
    except MalformedError as exc:
        refused = "nitrotpm_pcrs" in str(exc)
    else:
        refused = False
    if not refused:
        raise DemoFailure("an enclave verifier did not refuse the instance's document")
    d.p.say(
        f"{len(document)}-byte NitroTPM document with our nonce: signature, chain to the\n"
        "simulated root, PCR4, PCR12 and nonce verified\n"
        f"(module {verified.module_id}); an enclave verifier refuses the\n"
        "same document: it has nitrotpm_pcrs, not pcrs"
    )

    d.p.step("An app on instance A asks the local API to decrypt the secret")
    status, reply = _decrypt_in(d, socket_path)
    if status != 200:
        raise DemoFailure(f"instance A could not decrypt: {status} {reply}")
    if base64.b64decode(str(reply["plaintext"])) != SECRET:
        raise DemoFailure("instance A got different bytes than the producer encrypted")
    d.p.say(
        "POST /v1/decrypt -> 200: the plaintext matches what the producer encrypted\n"
        "path: app -> local API -> KMS client (fresh NitroTPM document, ephemeral RSA\n"
        "key) -> KMS, which checked NitroTPMPCR4 and NitroTPMPCR12 against the policy\n"
        "and encrypted the answer to the instance's key"
    )
    return socket_path


def _instance_b_is_refused(d: _Demo, ami: MeasurementSet) -> str:
    d.p.step("Launch simulated instance B from another AMI (another PCR4), same role")
    socket_path = _start_instance(d, "instance-b", _boot_pcrs(ami, _OTHER_AMI))
    status, reply = _decrypt_in(d, socket_path)
    if status != 403:
        raise DemoFailure(f"instance B was not refused: {status} {reply.get('error')}")
    if f"NitroTPMPCR4={_OTHER_AMI.hex()}" not in str(reply.get("message", "")):
        raise DemoFailure("the refusal does not name the PCR4 instance B presented")
    d.p.say(
        f"POST /v1/decrypt -> 403 {reply.get('error')}: KMS refused, and the message lists\n"
        "the NitroTPM PCRs the instance presented, for example:\n"
        f"  presented PCR4 = {_short(_OTHER_AMI)}\n"
        f"  policy's  PCR4 = {_short(_AMI)}"
    )
    return socket_path


def _stop_instances(d: _Demo, names: tuple[str, ...]) -> None:
    d.p.step("Stop everything")
    for name in names:
        status = d.processes.stop(name)
        if status != 0:
            raise DemoFailure(f"{name} exited with {status} on SIGTERM")
    _check_logs(d.processes.logs(), [SECRET, d.parent_role.secret_access_key])
    d.p.say("both instances stopped; no secret or credential appears in any process's log")
