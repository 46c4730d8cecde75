"""Pure parts of the stack code (no processes started)."""

import socket
from pathlib import Path

import pytest

from bus.stack import free_port, new_cluster_id, process_alive


def test_cluster_ids_never_start_with_a_dash() -> None:
    ids = [new_cluster_id() for _ in range(2000)]
    assert all(i[0].isalnum() and len(i) == 22 for i in ids)


def test_free_port_prefers_the_given_port_and_falls_back_when_it_is_taken() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        other = free_port(taken)
        assert other != taken
    assert free_port(other) == other


def test_a_pid_whose_command_line_lacks_the_marker_is_not_ours() -> None:
    import os

    assert process_alive(os.getpid(), "pytest") or process_alive(os.getpid(), "python")
    assert not process_alive(os.getpid(), "kafka.Kafka /nonexistent/server.properties")
    assert not process_alive(None, "x")


def test_the_local_brokers_jvm_compiles_with_c1_only_and_a_bounded_heap(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from bus.stack import Stack

    monkeypatch.setattr("bus.stack.toolchain.java_binary", lambda: "/usr/bin/java")  # no Java needed

    node_dir = tmp_path / "kafka"
    node_dir.mkdir()
    jvm = Stack(tmp_path, tmp_path / "policies")._node_jvm(1, tmp_path)
    assert "-XX:TieredStopAtLevel=1" in jvm and "-Xmx512m" in jvm
    assert jvm.index("-XX:TieredStopAtLevel=1") < jvm.index("-cp")  # a JVM option, not an argument
