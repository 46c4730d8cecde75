"""`sgbus demo`: the whole pipe on the local stack with synthetic Encompass and CP-IS events, and
one inbound file per agency through its connector."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bus.audit.chain import AuditStore, open_audit_store, verify
from bus.audit.heads import latest_head
from bus.audit.lookups import Reason, record_lookup
from bus.audit.signer import load_verifier, public_keys_path
from bus.audit.trail import render, subject_tokens
from bus.exceptions import StackError
from bus.gateway.client import GatewayClient
from bus.gateway.identity import PartnerCerts
from bus.kafka_io import idempotent_producer, produce_all, read_topic
from bus.policy.data import Partnership, load_partnership
from bus.provenance.registry import LocalSigners
from bus.pseudonymise.keyring import init_keyring
from bus.records import decode_audit_batch
from bus.routing import candidates
from bus.security.kafka_access import KafkaAccess
from bus.security.pki import ca_path
from bus.security.principals import partner_group_prefix, partner_name, publisher_for_org
from bus.settings import Settings
from bus.stack import Stack
from bus.topics import AUDIT, deliver_topic, ingress_topic
from schemas.registry import parse_event_dict
from schemas.synthetic import Synth

Echo = Callable[[str], None]


def _start_sgbus(settings: Settings, log_path: Path, args: list[str], env: dict[str, str] | None,
                 ) -> subprocess.Popen[bytes]:
    """`sgbus ARGS` in a child process on this stack's home and policies, logging to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = log_path.open("ab")
    child_env = {**os.environ, "SGBUS_HOME": str(settings.home.resolve()),
                 "SGBUS_POLICIES_DIR": str(settings.policies_dir.resolve()), **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "bus", *args], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=child_env)
    out.close()
    return proc


def start_worker(settings: Settings, log_path: Path, env: dict[str, str] | None = None,
                 stage: str = "all") -> subprocess.Popen[bytes]:
    """`sgbus worker [--stage S]` in a child process, logging to `log_path`."""
    return _start_sgbus(settings, log_path, ["worker", "--stage", stage], env)


def start_gateway(settings: Settings, log_path: Path, env: dict[str, str] | None = None,
                  timeout_s: float = 60.0) -> tuple[subprocess.Popen[bytes], str]:
    """`sgbus gateway --port 0` in a child process; (process, base URL) once it listens."""
    from bus.gateway.state import local_url, state_path

    state_path(settings.home).unlink(missing_ok=True)
    proc = _start_sgbus(settings, log_path, ["gateway", "--port", "0", "--metrics-port", "0"], env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        url = local_url(settings.home)
        if url is not None:
            return proc, url
        if proc.poll() is not None:
            raise StackError(f"the gateway exited ({proc.returncode}); see {log_path}")
        time.sleep(0.1)
    stop_worker(proc)
    raise StackError(f"the gateway did not start within {timeout_s:.0f}s; see {log_path}")


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def audit_for(event_id: str, audit: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r for r in audit if r["event_id"] == event_id]


def _record_demo_lookup(store: AuditStore, command: str, tokens: set[str], asked_as: str = "") -> None:
    """The demo looks its synthetic child up as a person would, so the look-up is on record
    first (README, "Every look-up is on record"), under a reason of its own."""
    record_lookup(store, command=command, reason=Reason.DEMONSTRATION, case_ref="", tokens=tokens, asked_as=asked_as)


def _show_audit_trail(settings: Settings, event: dict[str, Any], *, expected: int, echo: Echo, err: Echo,
                      timeout_s: float, access: KafkaAccess | None = None) -> int:
    """The audit trail of the Operation Encompass child, from the hash-chained store."""
    keyring = init_keyring(settings.keyring_path)[0]
    nhs = event["subject"]["identifiers"]["nhs_number"]
    tokens = subject_tokens(keyring, "nhs_number", nhs)
    deadline = time.monotonic() + timeout_s
    records: list[dict[str, Any]] = []
    recorded = False
    while time.monotonic() < deadline:
        if settings.audit_dsn is not None or settings.audit_db_path.is_file():
            store = open_audit_store(settings)
            if not recorded:  # as `sgbus audit trail` does: on record before the trail is read
                _record_demo_lookup(store, "audit trail", tokens)
                recorded = True
            records = [r for r in store.for_subject(tokens) if r["event_id"] == event["event_id"]]
            store.close()
            if len(records) >= expected:
                break
        time.sleep(0.2)
    if len(records) < expected:
        err(f"the audit store holds {len(records)} of {expected} records for the demo child")
        return 1
    echo("")
    echo(f"audit trail of the Operation Encompass child (sgbus audit trail --nhs-number {nhs}; "
         "the look-up is on record: sgbus audit lookups):")
    for line in render(records):
        echo("  " + line)
    store = open_audit_store(settings)
    verifier = load_verifier(settings.audit_public_keys or public_keys_path(settings.home))
    result = verify(store, verifier, latest_head(access) if access is not None else None)
    store.close()
    echo(f"audit chain: {'verified' if result.ok else 'FAILED: ' + str(result.problem)} "
         f"({result.records} records, {result.checkpoints} signed checkpoints)")
    return 0 if result.ok else 1


def _show_concern(settings: Settings, stack: Stack, partnership: Partnership, child: dict[str, Any], *,
                  echo: Echo, err: Echo, timeout_s: float) -> int:
    """The multi-agency concern the MASH received about the child, its audit trail, and the
    child's chronology as the MASH sees it (`sgbus chronology`)."""
    from bus.concern.chronology import mash_partner, timeline
    from bus.concern.chronology import render as render_chronology
    from bus.pseudonymise.operators.token import token

    if partnership.concern is None:
        return 0
    keyring = init_keyring(settings.keyring_path)[0]
    key = token(keyring, partnership.concern.linkage_domain, "nhs_number", child["identifiers"]["nhs_number"])
    mash = mash_partner(partnership, None)
    access = stack.access(partner_name(mash.id))
    store = open_audit_store(settings)
    _record_demo_lookup(store, "chronology", {key}, asked_as=mash.id)
    _record_demo_lookup(store, "audit trail", subject_tokens(keyring, "nhs_number", child["identifiers"]["nhs_number"]))
    store.close()
    deadline = time.monotonic() + timeout_s
    entries = timeline(access, mash, key, timeout_s=5.0)
    while time.monotonic() < deadline and not any(e.event_type.startswith("bus.") for e in entries):
        time.sleep(1.0)
        entries = timeline(access, mash, key, timeout_s=5.0)
    concerns = [e for e in entries if e.event_type.startswith("bus.")]
    if not concerns:
        err(f"no multi-agency concern reached {mash.id} within {timeout_s:.0f}s")
        return 1
    echo("")
    echo(f"multi-agency concern raised to {mash.id} (the MASH): {concerns[-1].summary}")
    deadline = time.monotonic() + timeout_s
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not records:
        store = open_audit_store(settings)
        records = store.for_event(concerns[-1].event_id)
        store.close()
        time.sleep(0.2)
    echo("  its audit trail:")
    for line in render(records):
        echo("    " + line)
    echo(f"  the child's chronology for the MASH (sgbus chronology --token {key}):")
    for line in render_chronology(entries, mash):
        echo("    " + line)
    return 0 if records else 1


GATEWAY_PUBLISHER, GATEWAY_COLLECTOR = "northshire-police", "oakfield-primary"


def _gateway_event(seed: int) -> dict[str, Any]:
    s = Synth(seed=seed + 1000)
    event = s.domestic_abuse_incident(s.child(4, 11), school_urn="900001")  # Oakfield Primary's URN
    event["event_id"] = str(uuid.uuid4())
    return event


def _gateway_client(settings: Settings, url: str, partner: str) -> GatewayClient:
    certs = PartnerCerts(settings.home)
    cert = certs.local(partner) or certs.issue(partner)[0]
    return GatewayClient(url, cert, ca_path(settings.home))


def _collect_over_https(settings: Settings, url: str, event_id: str, *, echo: Echo, err: Echo,
                        timeout_s: float) -> bool:
    """The school's system collects its mailbox over HTTPS and acknowledges what it stored."""
    with _gateway_client(settings, url, GATEWAY_COLLECTOR) as school:
        deadline, cursor = time.monotonic() + timeout_s, None
        items: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not any(i["event"]["event_id"] == event_id for i in items):
            page = school.mailbox(cursor, limit=500, wait=2).body
            items += page["items"]
            cursor = page["cursor"]
        if not any(i["event"]["event_id"] == event_id for i in items) or cursor is None:
            err(f"{GATEWAY_COLLECTOR} did not find the force's event in its mailbox within {timeout_s:.0f}s")
            return False
        school.ack(cursor)
    with _gateway_client(settings, url, GATEWAY_PUBLISHER) as force:
        status = force.status(event_id).body
        while status.get("state") == "received" and time.monotonic() < deadline:  # the audit store catching up
            time.sleep(0.2)
            status = force.status(event_id).body
    echo("")
    echo(f"{GATEWAY_COLLECTOR} collected {len(items)} deliver{'y' if len(items) == 1 else 'ies'} from its mailbox "
         "over HTTPS, the force's event among them, and acknowledged them")
    echo(f"{GATEWAY_PUBLISHER} tracks its event: {status.get('state')}, shared with {status.get('shared_with')} "
         f"partner(s), named: {', '.join(status.get('recipients') or []) or 'none'}")
    return True


def _show_operators_view(stack: Stack, *, delivered: int, echo: Echo, err: Echo, timeout_s: float = 30.0) -> None:
    """What `sgbus status` shows an operator, once Prometheus has scraped the demo's deliveries."""
    from bus.ops.status import StatusUnavailable, collect
    from bus.ops.status import render as render_status

    status = stack.status()
    if not status["prometheus_url"]:
        return
    deadline = time.monotonic() + timeout_s
    access = stack.monitoring_access()
    try:
        view = collect(status["prometheus_url"], status["alertmanager_url"], access)
        # Until Prometheus has scraped the worker since the last delivery, and the audit stage has
        # verified the chain once.
        while time.monotonic() < deadline and not (
                view.delivered_total >= delivered and view.audit_verified is not None
                and any(t["job"] == "sgbus-gateway" for t in view.targets)):
            time.sleep(1.0)
            view = collect(status["prometheus_url"], status["alertmanager_url"], access)
    except StatusUnavailable as exc:
        err(f"(no operator's view: {exc})")
        return
    echo("")
    echo(f"operator's view (`sgbus status`; Prometheus {status['prometheus_url']}, "
         f"Alertmanager {status['alertmanager_url']}):")
    for line in render_status(view).splitlines():
        echo(f"  {line}")


def run_demo(settings: Settings, *, seed: int, timeout_s: float, echo: Echo, err: Echo) -> int:
    stack = Stack(settings.home, settings.policies_dir, progress=err)
    _status, started = stack.up()
    worker = gateway = concern_worker = None
    try:
        init_keyring(settings.keyring_path)
        partnership = load_partnership(settings.policies_dir / "data")
        events = Synth(seed=seed).demo_set()
        # The Operation Encompass child is known to the school and the NHS too: three agencies
        # within 90 days, so the bus raises a multi-agency concern to the MASH.
        more = Synth(seed=seed + 2000)
        encompass_child = events[0]["subject"]
        events += [more.attendance_concern(encompass_child, school_urn="900001"),
                   more.unscheduled_care_attendance(encompass_child)]
        for e in events:  # fresh ids: earlier demo runs on the same stack must not count
            e["event_id"] = str(uuid.uuid4())
        titles = {e["event_id"]: e["event_type"] for e in events}
        # One inbound file per agency, in its own format, through its connector.
        from connectors.samples import demo_runs

        for run in demo_runs(settings.policies_dir / "data"):
            err(f"connector {run.connector} ({run.org_id}): {run.file.name} -> {len(run.events)} event(s), "
                f"{len(run.rejected)} bad record(s) reported")
            for line in run.rejected:
                err(f"  {line}")
            events += run.events
            titles.update({e["event_id"]: f"{e['event_type']} <- {run.connector}" for e in run.events})
        ids = {e["event_id"] for e in events}
        expected = sum(
            len(candidates(partnership, e["event_type"], e["source"]["agency"], e["source"]["org_id"]))
            for e in events
        )
        # One more, published over HTTPS through the gateway by the force's system.
        gateway_event = _gateway_event(seed)
        titles[gateway_event["event_id"]] = f"{gateway_event['event_type']} <- gateway"
        expected += len(candidates(partnership, gateway_event["event_type"], "police", "NSP"))
        ids.add(gateway_event["event_id"])
        # The demo's audit stage verifies its chain every 5 s, so the operator's view at the end shows it.
        interval = os.environ.get("SGBUS_AUDIT_VERIFY_INTERVAL_S", "5")
        worker = start_worker(settings, settings.home / "demo-worker.log",
                              env={"SGBUS_AUDIT_VERIFY_INTERVAL_S": interval})
        # The multi-agency concern runs beside the sharing pipe, in its own process.
        concern_worker = start_worker(settings, settings.home / "demo-concern.log", stage="concern")
        gateway, gateway_url = start_gateway(settings, settings.home / "demo-gateway.log")
        err(f"worker started (pid {worker.pid}), concern stage (pid {concern_worker.pid}), gateway on "
            f"{gateway_url}; publishing {len(events) + 1} synthetic events ...")
        # Each organisation publishes as its own principal, as its system would.
        records: dict[str, list[tuple[str, bytes, bytes]]] = {}
        signers = LocalSigners(settings.home)
        for i, e in enumerate(events):
            # ... and signs with its organisation's registered key (README: Provenance and integrity).
            events[i] = e = signers.sign(e)
            parsed = parse_event_dict(e)  # the demo set must itself be valid
            publisher = publisher_for_org(partnership, parsed.source.org_id)
            if publisher is None:
                raise StackError(f"demo event from an organisation with no publisher ({parsed.event_type})")
            records.setdefault(publisher, []).append(
                (ingress_topic(e["source"]["agency"]), parsed.partition_key(), json.dumps(e).encode()))
        for publisher, batch in records.items():
            produce_all(idempotent_producer(stack.access(publisher)), batch)
        gateway_event = signers.sign(gateway_event)
        receipt = _gateway_client(settings, gateway_url, GATEWAY_PUBLISHER).publish(gateway_event)
        if receipt.status != 202:
            err(f"the gateway refused the force's event: {receipt.body}")
            return 1
        echo(f"{GATEWAY_PUBLISHER} published over HTTPS (mutual TLS): receipt {receipt.body['topic']}"
             f"/{receipt.body['partition']}@{receipt.body['offset']}")

        def audits_for_demo(values: list[bytes]) -> list[dict[str, object]]:
            decoded = (r.model_dump(mode="json") for v in values for r in decode_audit_batch(v))
            return [r for r in decoded if r["event_id"] in ids]

        audit = audits_for_demo(read_topic(
            stack.access(), AUDIT, timeout_s=timeout_s, until=lambda vs: len(audits_for_demo(vs)) >= expected
        ))
        if len(audit) < expected:
            err(f"only {len(audit)} of {expected} decisions audited within {timeout_s:.0f}s; "
                f"see {settings.home / 'demo-worker.log'}")
            return 1
        echo(f"{'event':<58} {'recipient':<22} {'decision':<8} agreement / reason")
        for rec in sorted(audit, key=lambda r: (str(titles[str(r['event_id'])]), str(r["recipient"]))):
            why = rec["agreement"] if rec["decision"] == "allow" else rec["reasons"][0]  # type: ignore[index]
            echo(f"{titles[str(rec['event_id'])]:<58} {rec['recipient']!s:<22} {rec['decision']!s:<8} {why}")
        delivered: Counter[str] = Counter()
        for partner in partnership.partners:
            # Read as the partner itself: its credentials open its own topic and nothing else.
            values = read_topic(stack.access(partner_name(partner.id)), deliver_topic(partner.id), timeout_s=10.0,
                                to_end=True,
                                group=partner_group_prefix(partner.id) + "demo")
            delivered[partner.id] = sum(1 for v in values if json.loads(v)["event_id"] in ids)
        echo("")
        echo("deliveries per partner:")
        for partner in partnership.partners:
            echo(f"  {partner.id:<28} {delivered[partner.id]}")
        allowed = sum(1 for r in audit if r["decision"] == "allow")
        echo(f"audit records: {len(audit)} ({allowed} allowed, {len(audit) - allowed} denied)")
        if sum(delivered.values()) != allowed:
            err(f"delivered {sum(delivered.values())} but {allowed} shares were allowed")
            return 1
        if not _collect_over_https(settings, gateway_url, gateway_event["event_id"], echo=echo, err=err,
                                   timeout_s=timeout_s):
            return 1
        shown = _show_audit_trail(settings, events[0], expected=len(audit_for(events[0]["event_id"], audit)),
                                  echo=echo, err=err, timeout_s=timeout_s, access=stack.access())
        if shown == 0:
            shown = _show_concern(settings, stack, partnership, encompass_child, echo=echo, err=err,
                                  timeout_s=timeout_s)
        _show_operators_view(stack, delivered=sum(delivered.values()), echo=echo, err=err)
        return shown
    finally:
        for proc in (gateway, worker, concern_worker):
            if proc is not None:
                stop_worker(proc)
        for name in reversed(started):
            stack.stop_service(name)
        if started:
            err(f"stopped {', '.join(started)}")
