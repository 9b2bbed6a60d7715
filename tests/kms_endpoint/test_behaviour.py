"""The endpoint's rules, against in-process services backed by an in-process emulator.

The stock clients run against real processes in the other modules; here the service is
started in this process so that each rule can get its own configuration quickly. The
emulator is real (HTTP, SigV4, key policies that want the enclave's PCR0).
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from attested.errors import ConfigurationError
from attested.service._http import UnixHTTPConnection
from tests.kit import PCR0
from tests.kms_endpoint.conftest import InProcess
from tests.kms_endpoint.raw import headers_for, send
from tests.kms_endpoint.stack import PLAINTEXT, endpoint_client, key_policy

pytestmark = pytest.mark.integration


def port_of(world: InProcess, **changes: object) -> int:
    service = world.start(**changes)
    return int(service.listeners["kms_endpoint"].port or 0)


def error_of(call: object) -> tuple[str, str]:
    assert callable(call)
    with pytest.raises(ClientError) as raised:
        call()
    error = raised.value.response["Error"]
    return str(error["Code"]), str(error["Message"])


def test_decrypt_answers_exactly_the_members_kms_sends_without_recipient(
    in_process: InProcess,
) -> None:
    blob = world_blob(in_process)
    reply = send(port_of(in_process), "Decrypt", {"CiphertextBlob": blob})
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/x-amz-json-1.1"
    assert reply.headers["x-amzn-requestid"]
    # KeyMaterialId: KMS leaves it out when the request had a Recipient, as ours did.
    assert sorted(reply.json()) == ["EncryptionAlgorithm", "KeyId", "Plaintext"]


def world_blob(world: InProcess) -> str:
    blob = world.admin.encrypt(KeyId=world.keys.good, Plaintext=PLAINTEXT)["CiphertextBlob"]
    return base64.b64encode(blob).decode()


def test_reencrypt_is_refused_unless_allowed(in_process: InProcess) -> None:
    keys = in_process.keys
    blob = in_process.admin.encrypt(KeyId=keys.good, Plaintext=PLAINTEXT)["CiphertextBlob"]
    refused = endpoint_client(in_process.url(in_process.start()))
    code, message = error_of(
        lambda: refused.re_encrypt(CiphertextBlob=blob, DestinationKeyId=keys.good)
    )
    assert code == "UnsupportedOperationException"
    assert "kms_endpoint.allow_reencrypt" in message
    assert "attestation" in message

    kms = endpoint_client(in_process.url(in_process.start(kms_endpoint_allow_reencrypt=True)))
    moved = kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId="alias/endpoint-aliased")
    assert moved["KeyId"] == keys.aliased
    assert moved["SourceKeyId"] == keys.good
    assert kms.decrypt(CiphertextBlob=moved["CiphertextBlob"])["Plaintext"] == PLAINTEXT
    code, _ = error_of(lambda: kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=keys.outside))
    assert code == "AccessDeniedException"
    # The source key is checked too, from KMS's answer when the request names none.
    outside = in_process.admin.encrypt(KeyId=keys.outside, Plaintext=b"x")["CiphertextBlob"]
    code, message = error_of(
        lambda: kms.re_encrypt(CiphertextBlob=outside, DestinationKeyId=keys.good)
    )
    assert code == "AccessDeniedException"
    assert keys.outside in message
    assert "dropped" in message


def test_attested_operations_follow_kms_operations(in_process: InProcess) -> None:
    kms = endpoint_client(
        in_process.url(in_process.start(operations=frozenset({"generate-random"})))
    )
    assert len(kms.generate_random(NumberOfBytes=4)["Plaintext"]) == 4
    code, message = error_of(
        lambda: kms.generate_data_key(KeyId=in_process.keys.good, KeySpec="AES_256")
    )
    assert code == "AccessDeniedException"
    assert "'generate-data-key' is not in kms.operations" in message
    # Pass-through operations return nothing secret and stay available.
    assert kms.encrypt(KeyId=in_process.keys.good, Plaintext=b"x")["CiphertextBlob"]


def test_a_pinned_access_key_id(in_process: InProcess) -> None:
    url = in_process.url(in_process.start(kms_endpoint_access_key_id="AKIAENDPOINTCALLER01"))
    assert endpoint_client(url).generate_random(NumberOfBytes=4)["Plaintext"]
    other = boto3.client(
        "kms",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="AKIASOMEOTHERCALLER1",
        aws_secret_access_key="whatever",
    )
    code, message = error_of(lambda: other.generate_random(NumberOfBytes=4))
    assert code == "UnrecognizedClientException"
    assert "kms_endpoint.access_key_id" in message
    assert "AKIASOMEOTHERCALLER1" not in message


@pytest.mark.parametrize(
    ("changes", "code", "words"),
    [
        ({"Authorization": None}, "MissingAuthenticationTokenException", "Missing"),
        ({"Authorization": "Bearer x"}, "IncompleteSignatureException", "'Credential'"),
        ({"X-Amz-Date": None}, "IncompleteSignatureException", "X-Amz-Date"),
        ({"X-Amz-Date": "yesterday"}, "IncompleteSignatureException", "X-Amz-Date"),
        (
            {"Authorization": headers_for("x")["Authorization"].replace("/kms/", "/s3/")},
            "InvalidSignatureException",
            "'kms'",
        ),
        ({"Content-Type": "application/json"}, "UnknownOperationException", "Content-Type"),
        ({"X-Amz-Target": "TrentService.NoSuchThing"}, "UnknownOperationException", "Unknown"),
        ({"X-Amz-Target": "DynamoDB_20120810.GetItem"}, "UnknownOperationException", "POST /"),
    ],
)
def test_shape_errors_are_kms_shaped(
    in_process: InProcess, changes: dict[str, str | None], code: str, words: str
) -> None:
    reply = send(
        port_of_shared(in_process), "GenerateRandom", {"NumberOfBytes": 8}, changes=changes
    )
    assert (reply.status, reply.code) == (400, code), reply.body
    assert words in reply.message


_SHARED: dict[int, int] = {}


def port_of_shared(world: InProcess) -> int:
    """One service with the default configuration for the many small checks."""
    if id(world) not in _SHARED:
        _SHARED[id(world)] = port_of(world)
    return _SHARED[id(world)]


def test_signatures_are_not_checked(in_process: InProcess) -> None:
    """Any well-formed SigV4 header is taken: the callers are the enclave's processes."""
    reply = send(port_of_shared(in_process), "GenerateRandom", {"NumberOfBytes": 8})
    assert reply.status == 200
    assert len(reply.json()["Plaintext"]) == 12  # 8 bytes in base64


def test_other_paths_and_methods(in_process: InProcess) -> None:
    port = port_of_shared(in_process)
    reply = send(port, "GenerateRandom", {"NumberOfBytes": 8}, path="/v1/decrypt")
    assert (reply.status, reply.code) == (400, "UnknownOperationException")
    reply = send(port, "GenerateRandom", b"", method="GET")
    assert (reply.status, reply.code) == (501, "UnknownOperationException")
    assert reply.headers["content-type"] == "application/x-amz-json-1.1"


def test_requests_are_validated_with_kms_wording(in_process: InProcess) -> None:
    port = port_of_shared(in_process)
    reply = send(port, "GenerateRandom", {"NumberOfBytes": 2000})
    assert reply.code == "ValidationException"
    assert reply.message == (
        "1 validation error detected: Value '2000' at 'numberOfBytes' failed to satisfy "
        "constraint: Member must have value less than or equal to 1024"
    )
    reply = send(port, "GenerateRandom", {})
    assert (reply.code, reply.message) == ("ValidationException", "NumberOfBytes is required.")
    reply = send(port, "GenerateDataKey", {"KeyId": in_process.keys.good})
    assert reply.message == "Please specify either number of bytes or key spec."
    reply = send(port, "Decrypt", b"")  # optional in the model, required by KMS
    assert reply.code == "ValidationException"
    assert "Value null at 'ciphertextBlob'" in reply.message
    reply = send(port, "Decrypt", b"{not json")
    assert (reply.status, reply.code) == (400, "SerializationException")


def test_recipient_and_dry_run_are_refused_on_attested_operations(in_process: InProcess) -> None:
    port = port_of_shared(in_process)
    recipient = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": "AAAA"}
    reply = send(port, "GenerateRandom", {"NumberOfBytes": 8, "Recipient": recipient})
    assert reply.code == "ValidationException"
    assert "send no Recipient" in reply.message
    reply = send(
        port,
        "GenerateDataKey",
        {"KeyId": in_process.keys.good, "KeySpec": "AES_256", "DryRun": True},
    )
    assert reply.code == "ValidationException"
    assert "DryRun" in reply.message


def test_any_key_takes_every_key_without_resolving(in_process: InProcess) -> None:
    kms = endpoint_client(in_process.url(in_process.start(allowed_keys=("*",))))
    before = in_process.emu.request_count
    assert kms.generate_data_key(KeyId=in_process.keys.outside, NumberOfBytes=8)["Plaintext"]
    assert in_process.emu.request_count == before + 1  # GenerateDataKey, no DescribeKey


def test_describe_key_refused_gives_the_way_out(in_process: InProcess) -> None:
    """A key whose policy does not let the service describe it must be named as listed."""
    admin = in_process.admin
    policy = json.loads(key_policy(PCR0))
    policy["Statement"][0]["NotAction"].append("kms:DescribeKey")
    secretive = admin.create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]
    admin.create_alias(AliasName="alias/endpoint-secretive", TargetKeyId=secretive)
    alias_arn = secretive.split(":key/")[0] + ":alias/endpoint-secretive"
    kms = endpoint_client(in_process.url(in_process.start(allowed_keys=(alias_arn,))))
    # As listed: sent on as written, no DescribeKey needed.
    assert kms.generate_data_key(KeyId=alias_arn, NumberOfBytes=8)["KeyId"] == secretive
    code, message = error_of(
        lambda: kms.generate_data_key(KeyId="alias/endpoint-secretive", NumberOfBytes=8)
    )
    assert code == "AccessDeniedException"
    assert "DescribeKey" in message
    assert "Name the key as kms.allowed_keys lists it" in message
    # Named by its key ARN: the alias entry cannot be resolved, so it admits nothing.
    code, message = error_of(lambda: kms.generate_data_key(KeyId=secretive, NumberOfBytes=8))
    assert code == "AccessDeniedException"
    assert "not in kms.allowed_keys" in message


def test_kms_unreachable_is_a_retryable_kms_error(in_process: InProcess) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    kms = endpoint_client(in_process.url(in_process.start(kms_endpoint_url=dead)))
    calls: tuple[Callable[[], object], ...] = (
        lambda: kms.generate_random(NumberOfBytes=8),
        lambda: kms.encrypt(KeyId=in_process.keys.good, Plaintext=b"x"),
    )
    for call in calls:
        with pytest.raises(ClientError) as raised:
            call()
        response = raised.value.response
        assert response["Error"]["Code"] == "DependencyTimeoutException"
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert "could not connect" in response["Error"]["Message"]


def test_metrics_count_the_endpoint_like_the_other_routes(in_process: InProcess) -> None:
    service = in_process.start()
    kms = endpoint_client(in_process.url(service))
    kms.generate_random(NumberOfBytes=8)
    error_of(lambda: kms.generate_data_key(KeyId=in_process.keys.other_image, KeySpec="AES_256"))
    api = service.listeners["tcp"]
    with urllib.request.urlopen(f"http://127.0.0.1:{api.port}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    assert 'attested_service_requests_total{route="kms:GenerateRandom",status="200"} 1' in text
    assert 'attested_service_requests_total{route="kms:GenerateDataKey",status="400"} 1' in text
    assert (
        'attested_service_kms_errors_total{operation="kms:GenerateDataKey",'
        'type="AccessDeniedException"} 1' in text
    )
    assert 'attested_service_request_duration_seconds_count{route="kms:GenerateRandom"} 1' in text


def test_a_unix_socket_listener(in_process: InProcess) -> None:
    directory = Path(tempfile.mkdtemp(prefix="att-kep-", dir="/tmp"))
    path = directory / "run" / "kms.sock"
    service = in_process.start(kms_endpoint_listen=f"unix:{path}")
    assert service.listeners["kms_endpoint"].path == str(path)
    assert path.stat().st_mode & 0o777 == 0o660
    conn = UnixHTTPConnection(str(path), timeout=30)
    try:
        conn.request(
            "POST", "/", body=b'{"NumberOfBytes": 8}', headers=headers_for("GenerateRandom")
        )
        reply = conn.getresponse()
        assert reply.status == 200
        assert len(json.loads(reply.read())["Plaintext"]) == 12
    finally:
        conn.close()
    service.stop(deadline=5.0)
    assert not path.exists()
    shutil.rmtree(directory, ignore_errors=True)


def test_a_busy_port_fails_the_start_with_the_key_named(in_process: InProcess) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigurationError, match=r"kms_endpoint\.listen: cannot listen"):
            in_process.start(kms_endpoint_listen=f"tcp:127.0.0.1:{port}")
    assert not in_process.started[-1].running
    assert in_process.started[-1].listeners == {}
