"""Step 3: every secret opened with attestation, in parallel, before the app starts.

Each secret is one fetch of its stored ciphertext and one ``KmsClient.decrypt`` with its
``key_id`` and encryption context; the KMS client asks the NSM for a fresh attestation
document per call and opens KMS's envelope in this process. Secrets are opened at once
(``[exec] parallel`` at a time), so start-up costs about the slowest secret, not their
sum. The plaintexts are copied into :class:`Plaintexts`, mutable buffers that
:meth:`Plaintexts.clear` overwrites with zeros once they are handed over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

from attested.errors import AttestedError, MalformedError
from attested.exec._config import SecretSpec
from attested.exec._errors import SecretFailure
from attested.exec._stores import Stores
from attested.kms import KmsClient

__all__ = ["Plaintexts", "open_secrets"]

log = logging.getLogger("attested.exec")


class Plaintexts:
    """The opened secrets by name, each in a buffer that :meth:`clear` zeroes.

    ``repr`` shows the names only; the values come out only through :meth:`value`.
    """

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[str, bytearray] = {}

    def put(self, name: str, plaintext: bytes) -> None:
        """Keep a copy of ``plaintext`` under ``name``."""
        self._values[name] = bytearray(plaintext)

    def value(self, name: str) -> bytearray | None:
        """The plaintext of ``name`` (``None``: it was not opened); do not keep it."""
        return self._values.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        """Overwrite every buffer with zeros and forget them."""
        for buffer in self._values.values():
            buffer[:] = bytes(len(buffer))
        self._values.clear()

    def __repr__(self) -> str:
        return f"Plaintexts(<{len(self._values)} redacted: {', '.join(self._values)}>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("Plaintexts cannot be pickled")


def open_secrets(
    specs: Sequence[SecretSpec],
    *,
    kms: KmsClient,
    stores: Stores,
    parallel: int = 16,
    stop: Callable[[], bool] = lambda: False,
) -> tuple[Plaintexts, list[SecretFailure]]:
    """Fetch and decrypt every secret, ``parallel`` at a time.

    The work runs on daemon threads; this thread waits, calling ``stop`` every 0.2 s.
    When ``stop`` turns true it returns at once: secrets not yet opened are failures,
    and a fetch stuck on the network does not hold up the way out.

    Args:
        specs: the ``[[secrets]]``.
        kms: the attested KMS client (a fresh attestation document per call).
        stores: where the ciphertexts are fetched from.
        parallel: secrets in flight at most.
        stop: whether to give up (a stop signal came).

    Returns:
        The plaintexts opened, and the failures (required and optional ones); the
        caller decides whether the app may start.
    """
    plaintexts = Plaintexts()
    failures: list[SecretFailure] = []
    if not specs:
        return plaintexts, failures
    outcomes: dict[int, bytes | Exception] = {}
    todo = list(enumerate(specs))
    lock = threading.Lock()
    finished = threading.Condition(lock)
    stopping = threading.Event()  # the workers' view of stop(), which only this thread calls

    def work() -> None:
        while not stopping.is_set():
            with lock:
                if not todo:
                    return
                index, spec = todo.pop(0)
            outcome = _open_one(spec, kms, stores)
            with finished:
                outcomes[index] = outcome
                finished.notify_all()

    for number in range(max(1, min(parallel, len(specs)))):
        threading.Thread(target=work, name=f"attested-open-{number}", daemon=True).start()
    with finished:
        while len(outcomes) < len(specs):
            finished.wait(0.2)
            if stop():
                stopping.set()
                break
        done = dict(outcomes)
    for index, spec in enumerate(specs):
        outcome = done.get(index)
        if outcome is None:
            failures.append(_failure(spec, AttestedError("not opened: start-up was stopped")))
        elif isinstance(outcome, Exception):
            failures.append(_failure(spec, outcome))
            level = logging.WARNING if spec.optional else logging.ERROR
            log.log(level, "%s", failures[-1])
        else:
            plaintexts.put(spec.name, outcome)
            log.info("secret %r opened (%d bytes) from %s", spec.name, len(outcome), spec.source)
    return plaintexts, failures


def _failure(spec: SecretSpec, error: Exception) -> SecretFailure:
    return SecretFailure(
        name=spec.name, where=str(spec.source), error=error, optional=spec.optional
    )


def _open_one(spec: SecretSpec, kms: KmsClient, stores: Stores) -> bytes | Exception:
    try:
        ciphertext = stores.fetch(spec.source)
        result = kms.decrypt(
            ciphertext,
            key_id=spec.key_id,
            encryption_context=dict(spec.encryption_context) or None,
        )
        return result.plaintext.reveal()
    except (AttestedError, OSError) as exc:
        return exc
    except ValueError as exc:  # the KMS client's argument checks
        return MalformedError(f"not a KMS ciphertext: {exc}")
