"""Apps that are not Python, unmodified: they read env and files, and their lines are shipped.

A C program compiled here with the machine's compiler, and a Perl script, each read the
secret from ``DB_PASSWORD`` and from its file, say whether both hold the expected value
(never the value), and exit with their own status; the parent's sink gets their stdout
and stderr lines, tagged with the stream and the app's name.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.exec.support import Emulator, EnclaveToml, b64, run_exec, sink_lines, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAINTEXT = b"c-and-perl-see-this-secret-91"

C_APP = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long slurp(const char *path, char *buffer, long size) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    long n = (long)fread(buffer, 1, (size_t)size, f);
    fclose(f);
    return n;
}

int main(int argc, char **argv) {
    char expected[256], file[256];
    long e = slurp(argv[1], expected, sizeof expected);
    long f = slurp(argv[2], file, sizeof file);
    const char *env = getenv("DB_PASSWORD");
    int env_ok = env && (long)strlen(env) == e && memcmp(env, expected, (size_t)e) == 0;
    int file_ok = f == e && memcmp(file, expected, (size_t)e) == 0;
    printf("c: env %s\n", env_ok ? "ok" : "WRONG");
    printf("c: file %s\n", file_ok ? "ok" : "WRONG");
    fprintf(stderr, "c: a line on stderr\n");
    return env_ok && file_ok ? 7 : 1;
}
"""

PERL_APP = r"""
use strict;
use Digest::SHA qw(sha256_hex);
my ($expected, $path) = @ARGV;
open(my $fh, '<:raw', $path) or die "cannot open $path";
local $/; my $file = <$fh>; close($fh);
print "perl: env ", (sha256_hex($ENV{DB_PASSWORD}) eq $expected ? "ok" : "WRONG"), "\n";
print "perl: file ", (sha256_hex($file) eq $expected ? "ok" : "WRONG"), "\n";
print STDERR "perl: a line on stderr\n";
exit 9;
"""


def _config(
    emulator: Emulator,
    sim_state: Path,
    short_dir: Path,
    secret_dir: Path,
    sink: tuple[str, Path],
    app: str,
) -> Path:
    blob = emulator.encrypt(emulator.good, PLAINTEXT, {"app": app})
    toml = EnclaveToml(
        directory=short_dir,
        state=sim_state,
        emulator_url=emulator.url,
        allowed_keys=[emulator.good],
        ship_to=sink[0],
        exec_settings={"app_name": app},
    )
    toml.secrets.append(
        {"name": "db-password", "ciphertext": b64(blob), "key_id": emulator.good,
         "encryption_context": {"app": app}, "env": "DB_PASSWORD",
         "file": str(secret_dir / "db-password")}
    )  # fmt: skip
    return toml.write()


def _shipped(sink: Path, wanted: set[str]) -> list[dict[str, object]]:
    wait_for(lambda: wanted <= {line.get("message") for line in sink_lines(sink)}, "the lines")
    return [line for line in sink_lines(sink) if line.get("message") in wanted]


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
def test_a_c_program(
    emulator: Emulator,
    sim_state: Path,
    short_dir: Path,
    secret_dir: Path,
    sink: tuple[str, Path],
) -> None:
    source = short_dir / "app.c"
    source.write_text(C_APP)
    binary = short_dir / "billing"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True, timeout=120)
    expected = short_dir / "expected"
    expected.write_bytes(PLAINTEXT)
    config = _config(emulator, sim_state, short_dir, secret_dir, sink, "billing")

    run = run_exec(config, [str(binary), str(expected), str(secret_dir / "db-password")])

    assert run.status == 7, run.stderr
    assert run.stdout.decode().splitlines() == ["c: env ok", "c: file ok"]
    assert "c: a line on stderr" in run.stderr
    lines = _shipped(sink[1], {"c: env ok", "c: file ok", "c: a line on stderr"})
    streams = {str(line["message"]): line["logger"] for line in lines}
    assert streams == {"c: env ok": "stdout", "c: file ok": "stdout",
                       "c: a line on stderr": "stderr"}  # fmt: skip
    assert {line["source"] for line in lines} == {"billing"}


@pytest.mark.skipif(shutil.which("perl") is None, reason="no perl on this machine")
def test_a_perl_script(
    emulator: Emulator,
    sim_state: Path,
    short_dir: Path,
    secret_dir: Path,
    sink: tuple[str, Path],
) -> None:
    script = short_dir / "app.pl"
    script.write_text(PERL_APP)
    config = _config(emulator, sim_state, short_dir, secret_dir, sink, "reports")
    digest = hashlib.sha256(PLAINTEXT).hexdigest()

    run = run_exec(config, ["perl", str(script), digest, str(secret_dir / "db-password")])

    assert run.status == 9, run.stderr
    assert run.stdout.decode().splitlines() == ["perl: env ok", "perl: file ok"]
    lines = _shipped(sink[1], {"perl: env ok", "perl: file ok", "perl: a line on stderr"})
    assert {line["source"] for line in lines} == {"reports"}
    assert PLAINTEXT.decode() not in sink[1].read_text()
