"""What can stop ``attested exec`` before the app runs, under the library's one error tree.

Each error says which step failed and why; a secret's failure names the secret and keeps
the typed cause (a :class:`~attested.errors.KmsAccessDenied` with the PCRs presented, a
missing Secrets Manager item, a refused tunnel), never the secret itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from attested.errors import AttestedError, UnavailableError

__all__ = [
    "AppNotStarted",
    "SecretFailure",
    "SecretsNotOpened",
    "SetupError",
    "StoreAccessDenied",
    "StoreItemMissing",
    "StoreUnavailable",
]


class SetupError(UnavailableError):
    """A start-up step failed because of the environment.

    The loopback interface, the hosts file, a secret file's directory or owner.

    Attributes:
        step: what was being done (``"loopback"``, ``"hosts file"``, ``"secret file"``).
    """

    def __init__(self, message: str, *, step: str) -> None:
        super().__init__(message)
        self.step = step


class AppNotStarted(SetupError):
    """The app's command could not be executed.

    Attributes:
        errno: the ``OSError``'s errno (``ENOENT``: no such command).
    """

    def __init__(self, message: str, *, errno: int | None) -> None:
        super().__init__(message, step="app")
        self.errno = errno


class StoreUnavailable(UnavailableError):
    """Secrets Manager, SSM or S3 did not give the stored ciphertext.

    Attributes:
        service: ``secretsmanager``, ``ssm`` or ``s3``.
        code: the AWS error code, or ``""`` for a transport failure.
    """

    def __init__(self, message: str, *, service: str, code: str = "") -> None:
        super().__init__(message)
        self.service = service
        self.code = code


class StoreItemMissing(StoreUnavailable):
    """The secret, parameter, bucket or object does not exist (in this region)."""


class StoreAccessDenied(StoreUnavailable):
    """The store refused the credentials' request (IAM, resource policy, KMS of the store)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretFailure:
    """One secret that could not be opened or handed over.

    Attributes:
        name: the secret's ``name``.
        where: where its ciphertext is stored, in words.
        error: the typed cause (an ``AttestedError``, or ``OSError`` for a file).
        optional: the app may start without it.
    """

    name: str
    where: str
    error: Exception
    optional: bool = False

    def __str__(self) -> str:
        cause = self.error.strerror if isinstance(self.error, OSError) else self.error
        return f"secret {self.name!r} ({self.where}): {cause or type(self.error).__name__}"


class SecretsNotOpened(AttestedError):
    """A required secret could not be opened; the app was not started.

    Attributes:
        failures: every secret that failed, required ones first.
    """

    def __init__(self, failures: Sequence[SecretFailure]) -> None:
        if not failures:
            raise ValueError("SecretsNotOpened needs at least one failure")
        self.failures = tuple(sorted(failures, key=lambda failure: failure.optional))
        super().__init__("; ".join(str(failure) for failure in self.failures))
