"""Listeners: Unix socket mode and stale files, TCP ports, vsock; one is_loopback."""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

import pytest

from attested._runtime.listen import open_listener, remove_stale_socket
from attested.net import Address, is_loopback, parse_address


def test_unix_listener_mode_is_set_at_bind_and_the_file_removed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "a.sock"
    listener = open_listener(Address(kind="unix", path=str(path)), socket_mode=0o600)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert listener.address == Address(kind="unix", path=str(path))
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
    listener.close()
    listener.close()  # idempotent
    assert not path.exists()


def test_a_stale_socket_is_replaced_a_live_one_and_other_files_are_not(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file with nobody listening
    live = open_listener(Address(kind="unix", path=str(path)))
    try:
        with pytest.raises(OSError, match="in use") as raised:
            open_listener(Address(kind="unix", path=str(path)))
        assert raised.value.errno == errno.EADDRINUSE
        assert path.exists()
    finally:
        live.close()
    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(OSError, match="not a socket") as raised:
        remove_stale_socket(str(regular))
    assert raised.value.errno == errno.EEXIST
    assert regular.read_text() == "keep me"
    remove_stale_socket(str(tmp_path / "missing"))  # nothing there: nothing to do


def test_close_leaves_a_file_that_replaced_ours(tmp_path: Path) -> None:
    path = tmp_path / "r.sock"
    listener = open_listener(Address(kind="unix", path=str(path)))
    os.unlink(path)
    path.write_text("someone else's")
    listener.close()
    assert path.read_text() == "someone else's"


def test_tcp_listener_reports_the_port_chosen(tmp_path: Path) -> None:
    listener = open_listener(parse_address("tcp:127.0.0.1:0"))
    try:
        assert listener.address.host == "127.0.0.1"
        assert listener.address.port == listener.sock.getsockname()[1] != 0
        with socket.create_connection(("127.0.0.1", listener.address.port), timeout=5):
            pass
    finally:
        listener.close()
    if not socket.has_ipv6:
        return
    try:
        six = open_listener(parse_address("tcp:[::1]:0"))
    except OSError:
        return  # ::1 not configured here
    assert six.sock.family == socket.AF_INET6
    six.close()


def test_vsock_goes_through_the_address_family() -> None:
    address = parse_address("vsock:ANY:0")
    if not hasattr(socket, "AF_VSOCK"):
        with pytest.raises(OSError, match="AF_VSOCK"):
            open_listener(address)
        return
    try:
        listener = open_listener(address)
    except OSError:
        pytest.skip("no vsock transport on this kernel")
    try:
        assert listener.sock.family == socket.AF_VSOCK
        assert listener.address.kind == "vsock"
        assert listener.address.port == listener.sock.getsockname()[1]
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("0.0.0.0", False),  # noqa: S104 - a value under test
        ("10.0.0.1", False),
        ("::", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(host: str | None, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_the_other_packages_use_the_one_is_loopback() -> None:
    from attested.emulator import _config as emulator_config
    from attested.relay import _load

    assert emulator_config.is_loopback is is_loopback
    assert vars(_load)["is_loopback"] is is_loopback
