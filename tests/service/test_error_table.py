"""The error table: every class of our error tree gets its most specific row, never a base's.

The table is looked up along an error's MRO; this test works out the expected row on its
own (the one row type that is a subclass of every other row type the error is an
instance of), so a new subclass cannot be shadowed silently by a base class's row, and an
error that inherits from two unrelated row types must get a row of its own.
"""

from __future__ import annotations

import importlib

import pytest

from attested import errors
from attested.errors import AttestedError
from attested.service._errors import ERROR_CODES, KMS_ERRORS, kms_api_error, row_for

# Every package that defines errors of its own, so that the walk sees their classes too.
for _package in ("attested.kms", "attested.relay", "attested.parent", "attested.emulator"):
    importlib.import_module(_package)


def _tree() -> list[type[AttestedError]]:
    found: list[type[AttestedError]] = []
    todo: list[type[AttestedError]] = [AttestedError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", _tree(), ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_every_error_class_gets_its_most_specific_row(cls: type[AttestedError]) -> None:
    rows = [row for row in KMS_ERRORS if issubclass(cls, row)]
    most_specific = [row for row in rows if all(issubclass(row, other) for other in rows)]
    assert len(most_specific) == 1, f"{cls.__name__} inherits rows {rows}: give it a row"
    assert row_for(cls)[0] is most_specific[0]


def test_every_row_is_an_error_of_the_tree_with_a_known_code() -> None:
    assert AttestedError in KMS_ERRORS  # the root has a row: nothing falls through
    for cls, rule in KMS_ERRORS.items():
        assert issubclass(cls, AttestedError)
        assert rule.code in ERROR_CODES
        assert not rule.retry_after or rule.retry_after.isdigit()


_KMS = {"endpoint": "https://kms.us-east-1.amazonaws.com"}
CASES = [
    (errors.KmsAccessDenied("m", operation="Decrypt", attested=True, pcrs={}), "kms_access_denied"),
    (errors.KmsKeyNotFound("m", code="NotFoundException"), "kms_key_not_found"),
    (errors.KmsKeyDisabled("m", code="DisabledException"), "kms_key_disabled"),
    (errors.KmsThrottled("m", attempts=3), "kms_throttled"),
    (errors.KmsInvalidCiphertext("m", code="InvalidCiphertextException"), "kms_invalid_ciphertext"),
    (errors.KmsIncorrectKey("m", code="IncorrectKeyException"), "kms_incorrect_key"),
    (errors.KmsCredentialsRejected("m", code="ExpiredTokenException"), "kms_credentials_rejected"),
    (errors.KmsError("m", code="ValidationException"), "kms_invalid_request"),
    (errors.KmsError("m", code="KMSInternalException"), "kms_error"),
    (errors.ProxyUnreachable("m", **_KMS), "proxy_unreachable"),
    (errors.KmsTlsError("m", ca_bundle=None, **_KMS), "kms_tls_error"),
    (errors.KmsUnreachable("m", **_KMS), "kms_unreachable"),
    (errors.CredentialsUnavailable("m"), "credentials_unavailable"),
    (errors.AttestationUnavailable("m"), "attestation_unavailable"),
    (errors.RelayUnavailable("m"), "kms_unreachable"),
    (errors.RecipientIgnored("m"), "kms_answer_refused"),
    (errors.MalformedEnvelope("m"), "kms_answer_refused"),
    (errors.ConfigurationError("m"), "kms_error"),
]


@pytest.mark.parametrize(
    ("error", "code"), CASES, ids=[f"{type(e).__name__}-{c}" for e, c in CASES]
)
def test_each_error_the_client_raises_keeps_its_code_and_message(
    error: AttestedError, code: str
) -> None:
    api = kms_api_error(error, "decrypt")
    assert (api.code, api.status, api.message) == (code, ERROR_CODES[code][0], "m")
    retry = {"kms_throttled": "1", "proxy_unreachable": "5", "kms_unreachable": "5"}
    retry["credentials_unavailable"] = "5"
    expected = retry.get(code) if not isinstance(error, errors.RelayUnavailable) else None
    assert api.headers.get("Retry-After") == expected


@pytest.mark.parametrize(
    ("operation", "hint"),
    [
        ("decrypt", "key_id or encryption_algorithm does not fit the key"),
        ("generate-data-key", "key_id must name a symmetric encryption key"),
        ("derive-shared-secret", "key_id must name an ECC key pair"),
        ("generate-random", "key_id does not fit this operation"),
    ],
)
def test_a_key_that_does_not_fit_is_the_callers_mistake_with_a_hint(
    operation: str, hint: str
) -> None:
    api = kms_api_error(errors.KmsError("KMS said no", code="InvalidKeyUsageException"), operation)
    assert api.code == "kms_invalid_request"
    assert api.message.startswith(hint)
    assert api.message.endswith(". KMS said no")
