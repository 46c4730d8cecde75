"""The gateway's pure parts: publish checks, cursors, rate limits, certificate register, OpenAPI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bus.gateway.identity import PartnerCerts
from bus.gateway.mailbox import BadCursor, Delivery, _merge, decode_cursor, encode_cursor
from bus.gateway.openapi import COMMITTED, render
from bus.gateway.publish import Accepted, Refused, check_event
from bus.gateway.ratelimit import RateLimiter
from bus.policy.data import load_partnership
from bus.provenance.registry import LocalSigners
from bus.security.pki import PartnershipCA
from schemas.envelope import Agency
from schemas.synthetic import Synth

REPO = Path(__file__).parents[2]
PARTNERSHIP = load_partnership(REPO / "policies" / "data")
POLICE = PARTNERSHIP.partner("northshire-police")
SCHOOL = PARTNERSHIP.partner("oakfield-primary")


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> LocalSigners:
    local = LocalSigners(tmp_path_factory.mktemp("signers"))
    for agency, org in ((Agency.POLICE, "NSP"), (Agency.SCHOOL, "900001")):
        local.issue_publisher(agency, org)
    return local


def _dai(seed: int = 5) -> dict[str, Any]:
    s = Synth(seed=seed)
    return s.domestic_abuse_incident(s.child())


def _check(event: dict[str, Any] | bytes, partner: Any, signers: LocalSigners) -> Accepted | Refused:
    raw = event if isinstance(event, bytes) else json.dumps(event).encode()
    return check_event(raw, partner, signers.registry())


def test_the_forces_signed_event_is_accepted_for_its_ingress_topic(signers: LocalSigners) -> None:
    out = _check(signers.sign(_dai()), POLICE, signers)
    assert isinstance(out, Accepted) and out.topic == "sg.ingress.police" and len(out.content_sha256) == 64


def test_a_school_cannot_publish_a_police_event_even_one_signed_by_the_force(signers: LocalSigners) -> None:
    out = _check(signers.sign(_dai()), SCHOOL, signers)
    assert isinstance(out, Refused) and (out.status, out.code) == (403, "not_your_source")
    assert out.errors[0].field == "source.agency"


def test_an_event_altered_after_signing_is_forbidden(signers: LocalSigners) -> None:
    event = signers.sign(_dai())
    event["payload"]["risk_grade"] = "standard" if event["payload"]["risk_grade"] != "standard" else "high"
    out = _check(event, POLICE, signers)
    assert isinstance(out, Refused) and (out.status, out.code) == (403, "bad_signature")


def test_an_unsigned_event_is_unprocessable_and_an_unknown_key_asks_for_a_register_refresh(
        signers: LocalSigners, tmp_path: Path) -> None:
    out = _check(_dai(), POLICE, signers)
    assert isinstance(out, Refused) and (out.status, out.code) == (422, "unsigned")
    stranger = LocalSigners(tmp_path)
    stranger.issue_publisher(Agency.POLICE, "NSP")
    out = _check(stranger.sign(_dai()), POLICE, signers)
    assert isinstance(out, Refused) and out.status == 403 and out.unknown_key


def test_an_invalid_event_names_the_field_and_never_the_value(signers: LocalSigners) -> None:
    event = _dai()
    event["payload"]["risk_grade"] = "Jane Smith 07700 900123"
    out = _check(signers.sign(event), POLICE, signers)
    assert isinstance(out, Refused) and out.status == 422
    assert [e.field for e in out.errors] == ["payload.risk_grade"]
    assert "Jane" not in json.dumps([e.model_dump() for e in out.errors])


def test_bodies_that_are_not_events_get_400_422_or_413(signers: LocalSigners) -> None:
    assert _check(b"{not json", POLICE, signers).status == 400  # type: ignore[union-attr]
    assert _check(b"[1, 2]", POLICE, signers).status == 422  # type: ignore[union-attr]
    big = signers.sign({**_dai(), "padding": "x" * 300_000})
    assert _check(big, POLICE, signers).status == 413  # type: ignore[union-attr]


def test_a_cursor_round_trips_and_is_refused_by_another_mailbox_or_when_tampered() -> None:
    cursor = encode_cursor("oakfield-primary", {0: 3, 1: 7})
    assert decode_cursor("oakfield-primary", cursor) == {0: 3, 1: 7}
    with pytest.raises(BadCursor, match="another mailbox"):
        decode_cursor("riverside-academy", cursor)
    for bad in ("", "c1.", "c2." + cursor[3:], cursor[:-4], "c1.eyJtIjoxfQ"):
        with pytest.raises(BadCursor):
            decode_cursor("oakfield-primary", bad)


def test_a_page_takes_a_prefix_of_every_partition_in_delivery_time_order() -> None:
    from datetime import UTC, datetime

    def d(p: int, o: int, t: int) -> Delivery:
        return Delivery(p, o, datetime.fromtimestamp(t, UTC), {"n": t})

    pending = {0: [d(0, 5, 10), d(0, 6, 30), d(0, 9, 31)], 1: [d(1, 2, 20), d(1, 4, 40)]}
    picked, positions = _merge(pending, {0: 5, 1: 2}, 3)
    assert [(x.partition, x.offset) for x in picked] == [(0, 5), (1, 2), (0, 6)]
    assert positions == {0: 7, 1: 3}  # the next page starts exactly after what was returned


def test_the_rate_limiter_allows_a_burst_then_says_how_long_to_wait() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5) and RateLimiter.retry_after(wait) == "1"
    assert limiter.take("b") == 0.0  # partners have buckets of their own
    now[0] += 0.5
    assert limiter.take("a") == 0.0


def test_only_registered_unrevoked_partner_certificates_speak_for_a_partner(tmp_path: Path) -> None:
    certs = PartnerCerts(tmp_path)
    issued, entry = certs.issue("oakfield-primary")

    def der(path: Path) -> bytes:
        return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(serialization.Encoding.DER)

    assert certs.partner_for(der(issued.cert)) == "oakfield-primary"
    node = PartnershipCA(tmp_path).issue("kafka-node", server=True, client=True)  # same CA, no partner
    assert certs.partner_for(der(node.cert)) is None
    assert [c.fingerprint for c in certs.revoke("oakfield-primary")] == [entry.fingerprint]
    assert certs.partner_for(der(issued.cert)) is None
    assert certs.local("oakfield-primary") is None


def test_a_revocation_reaches_a_gateway_reading_a_mounted_copy_of_the_register(tmp_path: Path) -> None:
    home = tmp_path / "home"
    certs = PartnerCerts(home)
    issued, _ = certs.issue("oakfield-primary")
    der = x509.load_pem_x509_certificate(issued.cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    # As Kubernetes mounts a Secret: the file is a link through `..data`, swapped whole on change.
    mount = tmp_path / "mount"
    (mount / "..v1").mkdir(parents=True)
    (mount / "..v1" / "partner-certs.json").write_bytes(certs.path.read_bytes())
    (mount / "..data").symlink_to("..v1")
    (mount / "partner-certs.json").symlink_to("..data/partner-certs.json")
    gateway = PartnerCerts(home, mount / "partner-certs.json")
    assert gateway.partner_for(der) == "oakfield-primary"
    certs.revoke("oakfield-primary")
    (mount / "..v2").mkdir()
    (mount / "..v2" / "partner-certs.json").write_bytes(certs.path.read_bytes())
    (mount / "..data_tmp").symlink_to("..v2")
    (mount / "..data_tmp").replace(mount / "..data")
    assert gateway.partner_for(der) is None


def test_a_certificate_issued_for_another_system_keeps_no_key_on_the_bus_host(tmp_path: Path) -> None:
    certs = PartnerCerts(tmp_path)
    issued, _ = certs.issue("northshire-nhs-uec", out=tmp_path / "handover")
    assert issued.key.parent == tmp_path / "handover" and issued.key.stat().st_mode & 0o777 == 0o600
    assert not list((tmp_path / "pki").glob("gateway-client.*"))


def test_the_committed_openapi_document_is_current() -> None:
    assert COMMITTED.read_text() == render(), "run `sgbus gateway openapi --out schemas/openapi.json`"
    doc = json.loads(render())
    assert doc["openapi"].startswith("3.1")
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    for path, ops in doc["paths"].items():
        for op in ops.values():
            if path not in ("/healthz", "/openapi.json"):
                assert "401" in op["responses"] and "security" not in op


def _receipt(partner: str = "northshire-police", event_id: str = "5c1f9d3e-1111-4a2b-8c3d-000000000001"):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from bus.gateway.receipts import StoredReceipt

    return StoredReceipt(event_id, partner, "a" * 64, "sg.ingress.police", 1, 7, 1, datetime.now(UTC))


def test_receipts_are_per_partner_so_no_one_can_squat_another_organisations_event_id(tmp_path: Path) -> None:
    from bus.gateway.receipts import ReceiptStore

    store = ReceiptStore(tmp_path)
    squatter = store.put(_receipt("oakfield-primary"))
    mine = store.put(_receipt("northshire-police"))
    assert (squatter.partner, mine.partner) == ("oakfield-primary", "northshire-police")
    assert store.get("northshire-police", mine.event_id) == mine


def test_a_dead_letter_whose_reasons_are_not_objects_leaves_later_receipts_committed(tmp_path: Path) -> None:
    """Found in review: a reason that was a string raised inside the store's transaction and
    left the shared connection in it; every later receipt joined it and was lost on restart."""
    import sqlite3

    from bus.gateway.receipts import ReceiptStore

    store = ReceiptStore(tmp_path)
    store.add_dead_letters({"sg.ingress.police/0/5": ("e-1", ["a string", {"field": "x", "code": "y"}])}, "9")
    store.put(_receipt())
    with sqlite3.connect(tmp_path / "receipts.db") as other:  # what a restarted gateway would read
        assert other.execute("SELECT COUNT(*) FROM receipts").fetchone() == (1,)
    assert store.dead_letter("sg.ingress.police/0/5", "e-1") == [{"field": "x", "code": "y"}]


def test_a_dead_letter_counts_only_for_the_record_and_event_id_the_gateway_wrote(tmp_path: Path) -> None:
    from bus.gateway.receipts import ReceiptStore
    from bus.gateway.tracking import event_status

    store = ReceiptStore(tmp_path)
    receipt = store.put(_receipt())
    decisions = [{"recipient": "oakfield-primary", "decision": "allow", "agreement": "DSA-OE-001",
                  "source_org": "NSP", "source_agency": "police"},
                 {"recipient": "northshire-csc", "decision": "allow", "agreement": "DSA-OE-002",
                  "source_org": "XSP", "source_agency": "police"}]  # another force's event, same id
    # a forged letter for the same position naming another event changes nothing
    store.add_dead_letters({receipt.position: ("00000000-0000-4000-8000-000000000000",
                                               [{"field": "$", "code": "forged"}])}, "1")
    status = event_status(receipt, POLICE, store, PARTNERSHIP, lambda _id: decisions)
    assert (status.state, status.shared_with, status.recipients) == ("ingested", 1, ["oakfield-primary"])
    other = _receipt(event_id="5c1f9d3e-1111-4a2b-8c3d-000000000002")
    store.put(other)
    store.add_dead_letters({other.position: (other.event_id, [{"field": "event_id", "code": "duplicate_event_id",
                                                               "message": "never shown"}])}, "2")
    status = event_status(other, POLICE, store, PARTNERSHIP, lambda _id: [])
    assert status.state == "dead_lettered" and [r.model_dump() for r in status.reasons] == [
        {"field": "event_id", "code": "duplicate_event_id"}]


def test_a_batch_with_a_made_up_key_is_refused_without_repeating_the_key() -> None:
    from pydantic import ValidationError

    from bus.gateway.models import BatchRequest
    from bus.gateway.server import _validation_problem

    with pytest.raises(ValidationError) as info:
        BatchRequest.model_validate_json(b'{"events": [{}], "Jane Smith 07700900123": 1}')
    problems = _validation_problem(info.value)
    assert [p.field for p in problems] == ["<unknown>"] and "Jane" not in str([p.model_dump() for p in problems])


def test_a_malformed_request_is_logged_without_the_bytes_it_carried() -> None:
    import logging

    from bus.gateway.server import _NoRequestContent

    try:
        raise ValueError("Got more than 8190 bytes when reading: b'/v1/mailbox?after=Jane%20Smith'")
    except ValueError:
        import sys

        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                                   ("127.0.0.1",), sys.exc_info())
    assert _NoRequestContent().filter(record)
    assert record.getMessage() == "malformed_request: ValueError" and record.exc_info is None


def test_the_status_audit_reader_keeps_one_connection_and_reads_nothing_before_the_store_exists(
        tmp_path: Path) -> None:
    from bus.audit.chain import AuditStore
    from bus.gateway.tracking import AuditReader
    from bus.settings import Settings

    reader = AuditReader(Settings(home=tmp_path, audit_db=tmp_path / "audit.db"))
    assert reader("5c1f9d3e-1111-4a2b-8c3d-000000000001") == [] and reader._store is None
    AuditStore(tmp_path / "audit.db").close()
    assert reader("5c1f9d3e-1111-4a2b-8c3d-000000000001") == []
    first = reader._store
    reader("5c1f9d3e-1111-4a2b-8c3d-000000000002")
    assert first is not None and reader._store is first
    reader.close()
    assert reader._store is None


def test_nobody_publishes_as_the_bus_through_the_gateway(signers: LocalSigners) -> None:
    """Concerns come only from the bus's concern stage, even for a certificate issued to its partner entry."""
    signers.issue_publisher(Agency.BUS, "SGBUS")
    s = Synth(seed=9)
    forged = signers.sign(s.multi_agency_concern(s.child(min_age=6)))
    for caller in (POLICE, PARTNERSHIP.partner("sgbus-concern")):
        out = _check(forged, caller, signers)
        assert isinstance(out, Refused) and (out.status, out.code) == (403, "not_your_source")
        assert out.errors[0].field == "source.agency"


def test_certs_revoke_changes_the_register_the_gateway_reads(tmp_path: Path) -> None:
    """Found in review: with SGBUS_GATEWAY_PARTNER_CERTS set, `certs revoke` marked the home's
    copy and said "revoked", while the gateway's register still let the certificate in."""
    import shutil

    from typer.testing import CliRunner

    from bus.cli import app

    home = tmp_path / "home"
    issued, _entry = PartnerCerts(home).issue("oakfield-primary")
    gateway_copy = tmp_path / "mounted" / "partner-certs.json"
    gateway_copy.parent.mkdir()
    shutil.copyfile(home / "pki" / "partner-certs.json", gateway_copy)
    result = CliRunner().invoke(app, ["partners", "certs", "revoke", "oakfield-primary"],
                                env={"SGBUS_HOME": str(home), "SGBUS_GATEWAY_PARTNER_CERTS": str(gateway_copy)})
    assert result.exit_code == 0, result.output
    assert str(gateway_copy) in result.output
    der = x509.load_pem_x509_certificate(issued.cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert PartnerCerts(home, gateway_copy).partner_for(der) is None


def test_a_partner_collecting_through_a_connector_raises_no_mailbox_lag_unless_it_uses_the_mailbox() -> None:
    """Found in review: a partner holding a gateway certificate only to publish (it collects
    through a delivery connector) had its never-read mailbox reported as lag, so
    SgbusPartnerNotCollecting fired for it for ever."""
    from bus.gateway.mailbox import mailbox_group
    from bus.gateway.server import partner_of_mailbox, reports_mailbox_lag
    from bus.ops.lag import Group, LagCollector
    from bus.policy.data import Partnership, load_partnership
    from bus.topics import deliver_topic

    data = load_partnership(REPO / "policies" / "data").model_dump()
    for partner in data["partners"]:
        if partner["id"] == "oakfield-primary":
            partner["delivery"] = {"collected_by": "connector"}
    partnership = Partnership.model_validate(data)
    assert reports_mailbox_lag(partnership, "riverside-academy", in_use=False)  # the default: mailbox
    assert not reports_mailbox_lag(partnership, "oakfield-primary", in_use=False)
    assert reports_mailbox_lag(partnership, "oakfield-primary", in_use=True)  # it did use the mailbox
    assert reports_mailbox_lag(None, "oakfield-primary", in_use=False)  # the policy data not known yet
    assert reports_mailbox_lag(partnership, "gone-partner", in_use=False)

    groups = [Group("mailbox", mailbox_group(p), deliver_topic(p)) for p in ("oakfield-primary", "riverside-academy")]
    assert [partner_of_mailbox(g) for g in groups] == ["oakfield-primary", "riverside-academy"]
    collector = LagCollector(None, groups, keep=lambda g: reports_mailbox_lag(  # type: ignore[arg-type]
        partnership, partner_of_mailbox(g), in_use=False))
    assert [partner_of_mailbox(g) for g in collector.groups()] == ["riverside-academy"]


def test_partners_yaml_refuses_an_unknown_way_of_collecting() -> None:
    from pydantic import ValidationError

    from bus.policy.data import Delivery

    with pytest.raises(ValidationError, match="collected_by"):
        Delivery.model_validate({"collected_by": "fax"})
