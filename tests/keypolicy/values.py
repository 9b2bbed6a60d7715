"""Published measurements used across the key-policy tests (see eif-pcrs.md section 4)."""

# ruff: noqa: E501  (one 96-digit PCR per line reads best)

from __future__ import annotations

import json

# AWS Nitro Enclaves User Guide, hello-world (signed variant adds PCR8).
UG = {
    0: "7fb5c55bc2ecbb68ed99a13d7122abfc0666b926a79d5379bc58b9445c84217f59cfdd36c08b2c79552928702efe23e4",
    1: "235c9e6050abf6b993c915505f3220e2d82b51aff830ad14cbecc2eec1bf0b4ae749d311c663f464cde9f718acca5286",
    2: "0f0ac32c300289e872e6ac4d19b0b5ac4a9b020c98295643ff3978610750ce6a86f7edff24e3c0a4a445f2ff8a9ea79d",
    8: "70da58334a884328944cd806127c7784677ab60a154249fd21546a217299ccfa1ebfe4fa96a163bf41d3bcfaebe68f6f",
}
# aws-nitro-enclaves-cli tests/tests.rs, hello:v1 on x86_64 (unsigned).
CLI_X86 = {
    0: "6be47f8386175bc4853c3b821f9e6fa6f65f8bd73492d1df99ba9dd0d734e11c8941e7415d9167f7d0ea6991790566a7",
    1: "0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf321726696257d623e8805f3f605946b3d8b0c6aa",
    2: "dd61366a5424eea46f60c4e9d59e6c645a46420ccf962550ee1f3c109d230f88ec23667617aeaac425a1f50fe8e384d7",
}
UG_PCR3_ROLE = "arn:aws:iam::123456789012:role/Webserver"
UG_PCR3 = "78fce75db17cd4e0a3fb8dad3ad128ca5e77edbb2b2c7f75329dccd99aa5f6ef4fc1f1a452e315b9e98f9e312e6921e6"
UG_PCR4_INSTANCE = "i-1234567890abcdef0"
UG_PCR4 = "08f996b5d43e047a9eb51e7f548bfee7e164fd7dc8f65541f2ac09d6545ac812719327281c401a67a10fcba87ae79ce0"
ZERO = "0" * 96

ACCOUNT = "111122223333"
ENCLAVE_ROLE = "arn:aws:iam::111122223333:role/enclave-parent"
ADMIN_ROLE = "arn:aws:iam::111122223333:role/KeyAdmin"


def build_output(pcrs: dict[int, str], algorithm: str = "Sha384 { ... }") -> bytes:
    """What ``nitro-cli build-enclave`` prints (serde_json pretty, BTreeMap order)."""
    measurements = {"HashAlgorithm": algorithm} | {f"PCR{i}": v for i, v in sorted(pcrs.items())}
    return json.dumps({"Measurements": measurements}, indent=2).encode()
