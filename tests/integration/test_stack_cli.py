"""`sgbus stack` as a user runs it, against the session's stack."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from bus.exceptions import StackError
from bus.policy.data import load_partnership
from bus.topics import AUDIT, EVENTS, check_partition_counts, topic_specs
from tests.integration.conftest import Bus


def _sgbus(bus: Bus, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SGBUS_HOME": str(bus.settings.home), "SGBUS_POLICIES_DIR": str(bus.settings.policies_dir)}
    return subprocess.run([sys.executable, "-m", "bus", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


def test_status_json_reports_the_endpoints(bus: Bus) -> None:
    result = _sgbus(bus, "stack", "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["kafka_bootstrap"] == bus.bootstrap
    assert status["opa_url"] == bus.opa_url
    assert status["running"] is True


def test_second_stack_up_is_a_noop_that_says_so(bus: Bus) -> None:
    pids = (bus.stack.status()["kafka"]["pid"], bus.stack.status()["opa"]["pid"])
    result = _sgbus(bus, "stack", "up")
    assert result.returncode == 0, result.stderr
    assert "already running" in result.stdout
    assert (bus.stack.status()["kafka"]["pid"], bus.stack.status()["opa"]["pid"]) == pids


def test_tail_prints_delivered_events_as_json_lines(bus: Bus) -> None:
    result = _sgbus(bus, "tail", "northshire-nhs-uec", "--max", "1", "--timeout", "20")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["recipient"] == "northshire-nhs-uec"


def test_tail_of_unknown_partner_exits_2_naming_it(bus: Bus) -> None:
    result = _sgbus(bus, "tail", "no-such-partner", "--timeout", "2")
    assert result.returncode == 2
    assert "partner: unknown partner no-such-partner" in result.stderr


def test_synth_1000_events_are_published_and_ingested_in_full(bus: Bus) -> None:
    from tests.helpers import wait_for

    ingested_before = bus.metric("sgbus_events_ingested_total")
    rejected_before = bus.metric("sgbus_events_rejected_total")
    synth = _sgbus(bus, "synth", "--seed", "1", "--count", "1000")
    assert synth.returncode == 0, synth.stderr
    env = {**os.environ, "SGBUS_HOME": str(bus.settings.home)}
    published = subprocess.run([sys.executable, "-m", "bus", "publish", "-"], input=synth.stdout,
                               capture_output=True, text=True, env=env, timeout=300, check=False)
    assert published.returncode == 0, published.stderr
    assert "published 1000 event(s)" in published.stderr
    wait_for(lambda: bus.metric("sgbus_events_ingested_total") >= ingested_before + 1000, 120,
             what="1000 events ingested")
    assert bus.metric("sgbus_events_rejected_total") == rejected_before


def test_a_live_partition_count_the_bus_cannot_work_with_is_refused_naming_the_topic(bus: Bus) -> None:
    """`stack up` and `partners sync` read each topic's partition count from the brokers: one the
    hash chain or the children's ordering relies on that differs is refused, naming the topic
    and what it needs, never silently run with."""
    specs = topic_specs(load_partnership(bus.settings.policies_dir / "data"))
    check_partition_counts(bus.admin, specs)  # the stack as created: nothing to refuse
    live = {s.name: s.partitions for s in specs}  # as created, and (checked just above) on the brokers
    # The brokers' sg.events against a spec asking one partition more: as if it had been
    # recreated by hand with one fewer.
    wanting_more = [dataclasses.replace(s, partitions=s.partitions + 1) if s.name == EVENTS else s for s in specs]
    with pytest.raises(StackError) as refused:
        check_partition_counts(bus.admin, wanting_more)
    message = str(refused.value)
    assert f"{EVENTS} has {live[EVENTS]} partitions, the bus needs exactly {live[EVENTS] + 1}" in message
    assert "; " not in message and AUDIT not in message  # one problem: only the topic that differs is named
