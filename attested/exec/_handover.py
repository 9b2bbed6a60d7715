"""Step 4, first half: the secrets go to the app's environment and files, and nowhere else.

:func:`hand_over` writes the secret files (see :mod:`attested.exec._files`) and builds
the app's environment block: this process's environment, the egress proxy variables, and
each secret's ``env``. The block goes to ``execve`` of the app only; this process's own
environment (``/proc/self/environ``) is never changed, and it starts no other program.
:meth:`Handover.clear` drops the block once the app is running.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import NoReturn

from attested.errors import AttestedError, MalformedError
from attested.exec._config import SecretSpec
from attested.exec._errors import SecretFailure
from attested.exec._files import remove_files, write_secret_file
from attested.exec._open import Plaintexts

__all__ = ["Handover", "hand_over"]

log = logging.getLogger("attested.exec")


class Handover:
    """What the app gets: its environment block, and the secret files written for it.

    ``repr`` shows counts only.

    Attributes:
        files: the secret files written (removed by :meth:`remove_files`).
    """

    __slots__ = ("_env", "files")

    def __init__(self, env: dict[bytes, bytes], files: list[str]) -> None:
        self._env = env
        self.files = files

    @property
    def env(self) -> Mapping[bytes, bytes]:
        """The app's environment, secrets included; pass it to the app only."""
        return self._env

    def clear(self) -> None:
        """Forget the environment block (the app has its own copy)."""
        self._env.clear()

    def remove_files(self) -> None:
        """Remove the secret files (the app has stopped, or never started)."""
        remove_files(self.files)
        self.files = []

    def __repr__(self) -> str:
        return f"Handover(<{len(self._env)} variables, redacted>, files={len(self.files)})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("Handover cannot be pickled")


def hand_over(
    specs: Sequence[SecretSpec],
    plaintexts: Plaintexts,
    *,
    base_env: Mapping[bytes, bytes],
    extra_env: Mapping[str, str],
    tmpfs: str,
) -> tuple[Handover, list[SecretFailure]]:
    """Write the secret files and build the app's environment.

    Args:
        specs: the ``[[secrets]]``; those not in ``plaintexts`` (optional ones that
            failed) are left out.
        plaintexts: the opened secrets.
        base_env: this process's environment (``os.environb``).
        extra_env: variables to add unless ``base_env`` has them (the proxy).
        tmpfs: ``[exec] tmpfs``.

    Returns:
        The handover, and the secrets that could not be handed over (a plaintext with a
        NUL byte cannot be an environment variable; a file that cannot be written).
    """
    env = dict(base_env)
    for key, value in extra_env.items():
        env.setdefault(os.fsencode(key), os.fsencode(value))
    files: list[str] = []
    failures: list[SecretFailure] = []
    for spec in specs:
        plaintext = plaintexts.value(spec.name)
        if plaintext is None:
            continue
        try:
            if spec.env and b"\x00" in plaintext:
                raise MalformedError(
                    f"the plaintext holds a NUL byte and cannot be the environment variable "
                    f"{spec.env}; hand it over as a file"
                )
            if spec.file:
                write_secret_file(
                    spec.file,
                    plaintext,
                    mode=spec.file_mode,
                    owner=spec.owner,
                    tmpfs=tmpfs,
                    secret=spec.name,
                )
                files.append(spec.file)
                log.info(
                    "secret %r written to %s (mode %04o)", spec.name, spec.file, spec.file_mode
                )
            if spec.env:
                env[spec.env.encode("ascii")] = bytes(plaintext)
        except AttestedError as exc:
            failures.append(
                SecretFailure(
                    name=spec.name, where=str(spec.source), error=exc, optional=spec.optional
                )
            )
    return Handover(env, files), failures
