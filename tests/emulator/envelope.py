"""A test-only BER walker that opens CiphertextForRecipient envelopes independently of the
emulator's writer (RSA-OAEP-SHA256 with pyca/cryptography, then AES-256-CBC)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


@dataclass
class Node:
    tag: int
    indefinite: bool
    content: bytes
    children: list[Node]


def parse(data: bytes, pos: int = 0) -> tuple[Node, int]:
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first == 0x80:
        children = []
        while data[pos : pos + 2] != b"\x00\x00":
            child, pos = parse(data, pos)
            children.append(child)
        return Node(tag, True, b"", children), pos + 2
    if first & 0x80:
        n = first & 0x7F
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    else:
        length = first
    end = pos + length
    if tag & 0x20:
        children, p = [], pos
        while p < end:
            child, p = parse(data, p)
            children.append(child)
        return Node(tag, False, data[pos:end], children), end
    return Node(tag, False, data[pos:end], []), end


@dataclass
class Envelope:
    rid: bytes
    key_algorithm: bytes
    encrypted_key: bytes
    iv: bytes
    chunks: list[bytes]


def split(blob: bytes) -> Envelope:
    root, end = parse(blob)
    assert end == len(blob), "trailing bytes"
    enveloped = root.children[1].children[0]
    version, recipient_infos, content_info = enveloped.children
    assert version.content == b"\x02"
    (ktri,) = recipient_infos.children
    _, rid, algorithm, encrypted_key = ktri.children
    _, cipher, content = content_info.children
    return Envelope(
        rid=rid.content,
        key_algorithm=algorithm.content,
        encrypted_key=encrypted_key.content,
        iv=cipher.children[1].content,
        chunks=[c.content for c in content.children],
    )


def open_envelope(blob: bytes, key: rsa.RSAPrivateKey) -> bytes:
    env = split(blob)
    cek = key.decrypt(
        env.encrypted_key,
        OAEP(mgf=MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(env.iv)).decryptor()
    padded = decryptor.update(b"".join(env.chunks)) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()
