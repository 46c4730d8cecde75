"""The security model's pure parts: who may do what, private files, the CA, TLS to the audit
database, and a worker that refuses decisions from a policy revision it did not pin."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from bus.audit.chain import AuditStoreError, require_tls
from bus.exceptions import PolicyUnavailable
from bus.policy.data import load_partnership
from bus.policy.decision import Decision
from bus.pseudonymise.keyring import Keyring
from bus.pseudonymise.operators.token import token
from bus.route import Router
from bus.security.credentials import CredentialStore
from bus.security.files import loose_modes, private_dir, restrict_umask, write_private
from bus.security.kafka_access import KafkaAccess
from bus.security.pki import LOCAL_HOSTS, PartnershipCA
from bus.security.principals import Grant, principals, stage_app_id
from bus.topics import deliver_retention_ms, topic_specs
from schemas.envelope import Agency

REPO = Path(__file__).parents[2]
PARTNERSHIP = load_partnership(REPO / "policies" / "data")
BY_NAME = {p.name: p for p in principals(PARTNERSHIP)}


def _ingested(raw: dict[str, Any], keyring: Keyring) -> Any:
    """Ingest's output for a valid event (signature checks: tests/unit/test_ingest.py)."""
    from types import SimpleNamespace

    from schemas.registry import parse_event_dict
    from tests.helpers import pseudonymised

    return SimpleNamespace(event=pseudonymised(parse_event_dict(raw), keyring))


def _topics(name: str, operation: str) -> set[tuple[str, str]]:
    return {(g.name, g.pattern) for g in BY_NAME[name].grants if g.resource == "topic" and g.operation == operation}


def test_a_partner_principal_may_read_only_its_own_topic_and_write_nothing() -> None:
    for partner in PARTNERSHIP.partners:
        name = f"partner.{partner.id}"
        # its own deliveries, and the published audit heads (to check the audit chain itself)
        assert _topics(name, "read") == {(f"sg.deliver.{partner.id}", "literal"), ("sg.audit.heads", "literal")}
        assert _topics(name, "write") == set()
        groups = {(g.name, g.pattern) for g in BY_NAME[name].grants if g.resource == "group"}
        assert groups == {(f"partner.{partner.id}.", "prefixed")}


def test_the_replay_principal_reads_what_a_replay_needs_and_writes_only_sg_replay() -> None:
    """Noticed in review: `sgbus replay --failed` ran as the super user, which a deployment
    (Strimzi) has no KafkaUser for."""
    assert BY_NAME["sgbus-replay"].grants == frozenset({
        Grant("topic", "sg.dlq", "literal", "read"), Grant("topic", "sg.events", "literal", "describe"),
        Grant("topic", "sg.replay", "literal", "read"), Grant("topic", "sg.replay", "literal", "write"),
        Grant("group", "replay.", "prefixed", "read")})
    # It reads no event: sg.replay carries requests that name events, fetched by route itself.
    assert ("sg.events", "literal") not in _topics("sgbus-replay", "read")


def test_a_publisher_may_write_only_its_agencys_ingress_topic() -> None:
    for partner in PARTNERSHIP.partners:
        if partner.agency == "bus":
            continue
        grants = BY_NAME[f"publisher.{partner.id}"].grants
        assert grants == frozenset({Grant("topic", f"sg.ingress.{partner.agency.value}", "literal", "write")})


def test_only_the_concern_stage_may_write_the_buss_own_ingress_topic() -> None:
    """No publisher principal speaks for the bus: a forged concern cannot be written to Kafka
    (a prefixed grant counts for every topic it is a prefix of)."""
    writers = {name for name in BY_NAME
               if any(topic == "sg.ingress.bus" or (pattern == "prefixed" and "sg.ingress.bus".startswith(topic))
                      for topic, pattern in _topics(name, "write"))}
    assert writers == {"sgbus-concern"}  # the all-in-one worker runs the sharing stages only
    assert "publisher.sgbus-concern" not in BY_NAME


def test_no_principal_but_the_admin_may_write_the_audit_or_partner_topics_except_the_route_stage() -> None:
    for name, principal in BY_NAME.items():
        writes = _topics(name, "write")
        if ("sg.audit", "literal") in writes or ("sg.deliver.", "prefixed") in writes:
            assert name in {"sgbus-route", "sgbus-worker"}, name
        if principal.role == "admin":
            assert principal.grants == frozenset()  # a super user in the broker's configuration


def test_each_stage_uses_only_groups_and_transactional_ids_with_its_own_prefix() -> None:
    for stage, name in (("ingest", "sgbus-ingest"), ("route", "sgbus-route"), ("audit", "sgbus-audit"),
                        ("all", "sgbus-worker")):
        own = {(g.resource, g.name) for g in BY_NAME[name].grants if g.resource in {"group", "transactional_id"}}
        prefix = stage_app_id("", stage)
        assert own == {("group", prefix), ("transactional_id", prefix)}
        assert stage_app_id("sgbus", stage).startswith(prefix)
    # sg.audit.heads: the head it published, read at start (SGBUS_AUDIT_ANCHOR=published)
    assert _topics("sgbus-audit", "read") == {("sg.audit", "literal"), ("sg.audit.heads", "literal")}
    assert _topics("sgbus-audit", "write") == {("sg.audit.heads", "literal")}  # signed heads, outside the store
    assert not any(g.resource == "cluster" for g in BY_NAME["sgbus-route"].grants)
    assert _topics("sgbus-ingest", "read") == {("sg.ingress.", "prefixed")}


def test_only_the_replay_principal_may_put_events_on_sg_replay_and_only_it_and_the_route_stages_read_it() -> None:
    """sg.replay is routed again as it stands: a principal that could write it could have any
    pseudonymised event shared. Only `sgbus replay` (its own principal, or the admin) puts
    events there."""
    assert {n for n in BY_NAME if ("sg.replay", "literal") in _topics(n, "write")} == {"sgbus-replay"}
    assert {n for n in BY_NAME if ("sg.replay", "literal") in _topics(n, "read")} == {
        "sgbus-route", "sgbus-worker", "sgbus-replay"}
    assert _topics("sgbus-route", "read") == {("sg.events", "literal"), ("sg.replay", "literal")}


def _faust_group_numbers(subscriptions: dict[str, set[str]]) -> dict[str, int]:
    """Each topic's group number as Faust's assignor gives it (and so the middle of an exactly-once
    stage's transactional ids): its own grouping, then its numbering by sorted partition count."""
    from faust.assignor.partition_assignor import PartitionAssignor

    counts = {s.name: s.partitions for s in topic_specs(PARTNERSHIP)}
    cluster = type("Cluster", (), {"partitions_for_topic": lambda self, t: set(range(counts[t]))})()
    topics = set().union(*subscriptions.values())
    groups = PartitionAssignor._get_copartitioned_groups(topics, cluster, subscriptions)  # type: ignore[arg-type]
    return {topic: number for number, (_count, sets) in enumerate(sorted(groups.items()))
            for same in sets for topic in same}


def test_sg_replay_has_transactional_ids_of_its_own_and_sg_events_keeps_those_of_earlier_releases() -> None:
    """In a rolling upgrade some route workers read sg.events only, others sg.replay too: no two
    of them may hold one transactional id (they would fence each other, and the rollout stall)."""
    earlier = _faust_group_numbers({"old-a": {"sg.events"}, "old-b": {"sg.events"}})
    rolling = _faust_group_numbers({"old": {"sg.events"}, "new": {"sg.events", "sg.replay"}})
    done = _faust_group_numbers({"new-a": {"sg.events", "sg.replay"}, "new-b": {"sg.events", "sg.replay"}})
    assert rolling["sg.events"] == done["sg.events"] == earlier["sg.events"]
    assert rolling["sg.replay"] != rolling["sg.events"] and done["sg.replay"] != done["sg.events"]


def test_a_stage_route_worker_refuses_partition_counts_that_would_share_transactional_ids() -> None:
    from bus.topics import EVENTS_PARTITIONS, REPLAY_PARTITIONS, replay_partitions_problem

    assert replay_partitions_problem(EVENTS_PARTITIONS, REPLAY_PARTITIONS) is None
    assert replay_partitions_problem(12, 24) is None  # more on both: sg.replay still has its own ids
    assert "needs more" in (replay_partitions_problem(4, 4) or "")
    assert "needs more" in (replay_partitions_problem(12, 8) or "")  # sg.events changed by hand alone
    assert "not on the cluster" in (replay_partitions_problem(4, 0) or "")


def test_no_group_prefix_covers_another_principals_groups() -> None:
    prefixes = [(p.name, g.name) for p in principals(PARTNERSHIP) for g in p.grants
                if g.resource in {"group", "transactional_id"}]
    for name, prefix in prefixes:
        assert prefix.endswith(".")
        for other, other_prefix in prefixes:
            if other != name:
                assert not other_prefix.startswith(prefix), (name, other)


def test_every_principal_name_is_unique_and_has_no_characters_scram_would_escape() -> None:
    names = [p.name for p in principals(PARTNERSHIP)]
    bus_sources = sum(1 for p in PARTNERSHIP.partners if p.agency == "bus")  # no publisher principal
    # admin, 5 stages, the gateway, replays
    assert len(names) == len(set(names)) == 8 + 3 * len(PARTNERSHIP.partners) - bus_sources
    assert all("," not in n and "=" not in n for n in names)


def test_ingress_segments_roll_hourly_and_partner_topics_keep_the_longest_agreement_retention() -> None:
    specs = {s.name: s for s in topic_specs(PARTNERSHIP)}
    assert specs["sg.ingress.police"].config["segment.ms"] == str(3600 * 1000)
    longest = max(a.retention_days for a in PARTNERSHIP.agreements if "northshire-csc" in a.recipients)
    if PARTNERSHIP.emergency is not None and "social_care" in PARTNERSHIP.emergency.recipient_agencies:
        longest = max(longest, PARTNERSHIP.emergency.retention_days)
    assert specs["sg.deliver.northshire-csc"].config["retention.ms"] == str(longest * 86_400_000)
    assert deliver_retention_ms(PARTNERSHIP, "a-new-partner") == 7 * 86_400_000  # named by no agreement yet


def test_private_files_are_0600_in_0700_directories_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        path = write_private(tmp_path / "a" / "b" / "secret.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loose = tmp_path / "loose.txt"
    loose.write_text("x")
    loose.chmod(0o644)
    assert f"0o644 {loose}" in loose_modes(tmp_path)
    private_dir(tmp_path)
    loose.chmod(0o600)
    assert loose_modes(tmp_path) == []


def test_restrict_umask_makes_new_files_private(tmp_path: Path) -> None:
    previous = restrict_umask()
    try:
        (tmp_path / "plain.txt").write_text("x")
        (tmp_path / "dir").mkdir()
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "dir").stat().st_mode) == 0o700


def test_the_node_certificate_is_issued_by_the_ca_for_loopback(tmp_path: Path) -> None:
    ca = PartnershipCA(tmp_path).ensure()
    issued = ca.issue("sgbus-node-1", server=True, client=True, hosts=LOCAL_HOSTS)
    leaf, root = x509.load_pem_x509_certificates(issued.cert.read_bytes())
    leaf.verify_directly_issued_by(root)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(eku)
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert PartnershipCA(tmp_path).ensure().cert_path.read_bytes() == ca.cert_path.read_bytes()  # reused


def test_kafka_access_never_shows_its_password(tmp_path: Path) -> None:
    access = KafkaAccess("127.0.0.1:1", "partner.x", "s3cret-value", tmp_path / "ca.pem")
    assert "s3cret-value" not in repr(access)
    props = access.librdkafka(**{"group.id": "x.consumer"})
    assert props["security.protocol"] == "SASL_SSL" and props["ssl.endpoint.identification.algorithm"] == "https"


def test_credentials_are_generated_once_and_kept_private(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    first, created = store.ensure("partner.x")
    again, created_again = store.ensure("partner.x")
    assert created and not created_again and first.password == again.password
    assert len(first.password) >= 40
    assert stat.S_IMODE((tmp_path / "credentials" / "partner.x.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("dsn", [
    "postgresql://sgbus@db.example/audit?sslmode=require",
    "postgresql://sgbus@db.example/audit?sslmode=disable",
    "host=127.0.0.1 dbname=audit sslmode=prefer",
])
def test_an_audit_dsn_over_tcp_without_full_verification_is_refused(dsn: str) -> None:
    with pytest.raises(AuditStoreError, match="verify-full"):
        require_tls(dsn)


def test_an_audit_dsn_over_tcp_defaults_to_full_verification_and_a_socket_is_left_alone() -> None:
    assert "sslmode=verify-full" in require_tls("postgresql://sgbus@db.example/audit")
    assert require_tls("host=/var/run/postgresql dbname=audit") == "host=/var/run/postgresql dbname=audit"
    ok = "postgresql://sgbus@db.example/audit?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    assert require_tls(ok) == ok


class _AnswersWithRevision:
    """Stands in for OPA's answer only: the revision check is pure logic."""

    def __init__(self, revision: str) -> None:
        self.revision = revision

    async def decide_batch(self, requests: list[dict[str, Any]], today: str | None = None) -> list[Decision]:
        return [Decision(event_id=r["event"]["event_id"], recipient=r["recipient"], allow=False,
                         purpose=r["purpose"], reasons=["no"], revision=self.revision) for r in requests]


def test_decisions_from_another_revision_share_nothing_and_repin_the_worker(tmp_path: Path) -> None:
    from bus.pseudonymise.keyring import init_keyring, load_keyring
    from schemas.synthetic import Synth

    init_keyring(tmp_path / "k.json")
    keyring: Keyring = load_keyring(tmp_path / "k.json")
    s = Synth(seed=5)
    out = _ingested(s.child_protection_plan(s.child()), keyring)
    assert out.event is not None
    refreshed: list[str] = []

    def source() -> tuple[Any, str]:
        refreshed.append("sha256:new")
        return PARTNERSHIP, "sha256:new"

    router = Router(PARTNERSHIP, keyring, _AnswersWithRevision("sha256:new"), "sha256:pinned",  # type: ignore[arg-type]
                    source=source)
    with pytest.raises(PolicyUnavailable, match="revision"):
        asyncio.run(router.route_batch([out.event]))
    assert refreshed and router.revision == "sha256:new"
    plan = asyncio.run(router.route_batch([out.event]))  # the retry, under the new pin
    assert plan.audits and {a.policy_revision for a in plan.audits} == {"sha256:new"}


def test_opa_tokens_travel_over_tls_or_only_on_loopback() -> None:
    from bus.exceptions import ConfigurationError
    from bus.security.opa_auth import check_url

    check_url("https://opa.example:8181")
    check_url("http://127.0.0.1:8181")
    with pytest.raises(ConfigurationError, match="https"):
        check_url("http://opa.example:8181")


def test_the_opa_client_checks_the_partnership_ca_whatever_the_environment_says(tmp_path: Path) -> None:
    from bus.security.opa_auth import OpaAccess

    ca = PartnershipCA(tmp_path).ensure().cert_path
    access = OpaAccess("https://127.0.0.1:8443", "tok-secret", ca)
    assert "tok-secret" not in repr(access)
    client = access.sync_client()
    try:
        assert client._session.verify == str(ca)
        assert client._session.trust_env is False  # REQUESTS_CA_BUNDLE cannot swap the CA
        assert client._session.headers["Authorization"] == "Bearer tok-secret"
    finally:
        client.close_connection()
    assert access.ssl_context() is not None and OpaAccess("http://127.0.0.1:1", "t").ssl_context() is None


def test_the_policy_bundle_is_signed_and_carries_policies_data_revision_and_api_authorisation(
        tmp_path: Path) -> None:
    import tarfile

    from bus.policy.bundle import build_bundle, bundle_extra, ensure_policy_key
    from bus.policy.revision import policy_revision

    key = ensure_policy_key(tmp_path)
    assert stat.S_IMODE(key.private.stat().st_mode) == 0o600
    bundle = build_bundle(REPO / "policies", tmp_path / "b.tar.gz", key, {"admin": "a" * 64, "worker": "b" * 64})
    assert bundle.revision == policy_revision(REPO / "policies", PARTNERSHIP.as_opa_data(), bundle_extra(None))
    with tarfile.open(bundle.path) as tar:
        members = {m.name.lstrip("/"): m for m in tar.getmembers()}
        manifest = json.loads(tar.extractfile(members[".manifest"]).read())  # type: ignore[union-attr]
        data = json.loads(tar.extractfile(members["data.json"]).read())  # type: ignore[union-attr]
    assert ".signatures.json" in members
    assert {"sgbus/share/share.rego", "system/authz.rego"} <= set(members)  # opa build merges the data
    assert not any(n.endswith("_test.rego") for n in members)
    assert manifest["revision"] == bundle.revision and manifest["roots"] == ["sgbus", "system"]
    assert data["sgbus"]["meta"] == {"revision": bundle.revision}
    assert data["sgbus"]["partnership"] == PARTNERSHIP.as_opa_data()
    assert data["system"]["sgbus_tokens"] == {"admin": "a" * 64, "worker": "b" * 64}
    assert data["sgbus"]["signers"] == {"publishers": [], "declarers": []}  # the signing key register
    assert "circumstances" in data["sgbus"]["catalogue"]["police.domestic_abuse_incident.v1"]["free_text"]
    assert stat.S_IMODE(bundle.path.stat().st_mode) == 0o600


class _AllowsEverything:
    async def decide_batch(self, requests: list[dict[str, Any]], today: str | None = None) -> list[Decision]:
        return [Decision.model_validate({
            "event_id": r["event"]["event_id"], "recipient": r["recipient"], "allow": True, "agreement": "DSA-TEST",
            "purpose": r["purpose"], "reasons": ["test"], "revision": "sha256:r",
            "identifiers": {"nhs_number": "reveal", "upn": "token"},
            "demographics": {"name": "full", "dob": "full"}}) for r in requests]


def test_partner_topic_keys_are_each_partners_own_and_never_a_delivered_token(tmp_path: Path) -> None:
    """Issue 13: every partner topic was keyed by the controller token, so partners in
    different linkage domains got the same key for the same child. Then it was the child's token
    in the partner's linkage domain: an NHS-number token even where the agreement drops the NHS
    number, which the partner could match to the token another agreement gives it."""
    from bus.pseudonymise.keyring import init_keyring, load_keyring
    from schemas.synthetic import Synth

    init_keyring(tmp_path / "k.json")
    keyring = load_keyring(tmp_path / "k.json")
    s = Synth(seed=9)
    child = s.child(6, 10)
    events = []
    for raw in [s.domestic_abuse_incident(child), s.domestic_abuse_incident(child)]:
        out = _ingested(raw, keyring)
        assert out.event is not None
        events.append(out.event)
    router = Router(PARTNERSHIP, keyring, _AllowsEverything(), "sha256:r")  # type: ignore[arg-type]
    plan = asyncio.run(router.route_batch(events))
    keys: dict[str, set[str]] = {}
    for d in plan.deliveries:
        keys.setdefault(d.event.recipient, set()).add(d.key)
    domains = {p.id: p.linkage_domain for p in PARTNERSHIP.partners}
    assert {"northshire-csc", "oakfield-primary", "riverside-academy"} <= set(keys)
    assert all(len(k) == 1 for k in keys.values())  # one child, one key per partner: order kept
    assert keys["northshire-csc"] != keys["oakfield-primary"]  # mash vs education
    assert domains["oakfield-primary"] == domains["riverside-academy"]
    assert keys["oakfield-primary"] != keys["riverside-academy"]  # not even within one linkage domain
    assert events[0].subject_key not in set().union(*keys.values())  # never the controller token
    nhs = child["identifiers"]["nhs_number"]
    for partner, (key,) in keys.items():  # never the token that partner is (or could be) delivered
        assert key != token(keyring, domains[partner], "nhs_number", nhs), partner


def test_a_copy_shared_anonymously_cannot_be_matched_by_key_to_one_shared_with_identifiers(tmp_path: Path) -> None:
    """Found in review: keys were one domain per partner, so the key of a copy under an agreement
    that drops every identifier equalled that of a copy of the same child's event under an
    agreement revealing the NHS number: the 'anonymous' copies were re-identified."""
    from bus.pseudonymise.engine import partner_key
    from bus.pseudonymise.keyring import init_keyring, load_keyring

    init_keyring(tmp_path / "k.json")
    keyring = load_keyring(tmp_path / "k.json")
    partner = PARTNERSHIP.partners[0]
    child = {"identifiers": {"nhs_number": "9434765919"}}
    anon = partner_key(child, partner, "DSA-ANON", keyring, "i1")
    assert anon != partner_key(child, partner, "DSA-NAMED", keyring, "i2")
    assert anon == partner_key(child, partner, "DSA-ANON", keyring, "i3")  # one agreement: one key, order kept
    # An emergency override reveals what its agreement may not: its copies are keyed apart.
    assert anon != partner_key(child, partner, "DSA-ANON", keyring, "i4", override=True)


def test_an_allowed_decision_under_no_agreement_fails_the_batch_closed() -> None:
    from bus.policy.decision import bind_decisions

    request = {"event": {"event_id": "e1"}, "recipient": "r", "purpose": "p"}
    allowed = {"event_id": "e1", "recipient": "r", "purpose": "p", "allow": True, "agreement": None,
               "reasons": ["x"], "revision": "sha256:r"}
    with pytest.raises(PolicyUnavailable, match="under no agreement"):
        bind_decisions([request], [allowed])


def test_a_child_without_identifiers_is_not_keyed_by_the_buss_ingest_id(tmp_path: Path) -> None:
    from bus.pseudonymise.engine import partner_key
    from bus.pseudonymise.keyring import init_keyring, load_keyring

    init_keyring(tmp_path / "k.json")
    keyring = load_keyring(tmp_path / "k.json")
    partners = PARTNERSHIP.partners[:2]
    keys = {partner_key({"identifiers": {}}, p, "DSA-X", keyring, "ingest-123") for p in partners}
    assert len(keys) == 2 and "ingest-123" not in keys


def test_a_reused_event_id_never_carries_another_childs_identity(tmp_path: Path) -> None:
    """Issue 13: a second event reusing an event id in the same batch reached children's
    social care with the first child's name, date of birth and UPN token."""
    from bus.pseudonymise.keyring import init_keyring, load_keyring
    from schemas.synthetic import Synth

    init_keyring(tmp_path / "k.json")
    keyring = load_keyring(tmp_path / "k.json")
    s = Synth(seed=21)
    first, second = s.domestic_abuse_incident(s.child(6, 10)), s.domestic_abuse_incident(s.child(6, 10))
    second["event_id"] = first["event_id"]
    assert first["subject"]["family_name"] != second["subject"]["family_name"] or \
        first["subject"]["date_of_birth"] != second["subject"]["date_of_birth"]
    events = []
    for raw in [first, second]:
        out = _ingested(raw, keyring)
        assert out.event is not None
        events.append(out.event)
    plan = asyncio.run(Router(PARTNERSHIP, keyring, _AllowsEverything(), "sha256:r").route_batch(  # type: ignore[arg-type]
        events))
    to_csc = [d.event for d in plan.deliveries if d.event.recipient == "northshire-csc"]
    assert len(to_csc) == 2
    seen = {(v.subject.family_name, str(v.subject.date_of_birth)) for v in to_csc}
    assert seen == {(r["subject"]["family_name"], r["subject"]["date_of_birth"]) for r in (first, second)}


def test_the_gateway_writes_only_ingress_topics_and_reads_only_partner_topics_and_dead_letters() -> None:
    gateway = BY_NAME["sgbus-gateway"]
    assert gateway.role == "gateway" and gateway.partner_id is None
    # every partner agency's ingress topic by name; never the bus's own (only the concern stage writes it)
    assert _topics("sgbus-gateway", "write") == {(f"sg.ingress.{a.value}", "literal") for a in Agency
                                                 if a != Agency.BUS}
    assert _topics("sgbus-gateway", "read") == {("sg.deliver.", "prefixed"), ("sg.dlq", "literal")}
    assert {(g.resource, g.name) for g in gateway.grants if g.resource != "topic"} == {("group", "gateway.")}


def test_existing_topics_whose_partition_counts_would_break_the_bus_are_named() -> None:
    """A count changed by hand on the cluster is refused by `stack up` / `partners sync`, topic
    by topic; counts the bus does not rely on (ingress, partner, dead-letter topics) pass."""
    from bus.topics import AUDIT, AUDIT_HEADS, DLQ, EVENTS, REPLAY, deliver_topic, ingress_topic, partition_problems

    specs = topic_specs(PARTNERSHIP)
    as_specified = {s.name: s.partitions for s in specs}
    assert partition_problems(specs, as_specified) == []
    assert partition_problems(specs, {}) == []  # nothing there yet: everything is created
    assert partition_problems(specs, {**as_specified, ingress_topic("police"): 6, DLQ: 3,
                                      deliver_topic("oakfield-primary"): 1}) == []
    # sg.audit.heads may differ: its readers take the highest head of every partition
    assert partition_problems(specs, {**as_specified, AUDIT_HEADS: 3}) == []
    problems = partition_problems(specs, {**as_specified, EVENTS: 8, AUDIT: 2})
    assert [p.split(" ")[0] for p in problems] == [EVENTS, AUDIT, REPLAY]
    assert "needs exactly 4" in problems[0] and "needs exactly 1" in problems[1]
    assert "has 8 partitions and sg.events 8" in problems[2]  # as many as sg.events: shared transactional ids
    assert partition_problems(specs, {EVENTS: 4, REPLAY: 4})[0].startswith(REPLAY)


def test_a_secret_whose_file_was_deleted_can_still_be_rotated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README advises deleting a partner's secret file once sent: a leaked secret must still be replaceable."""
    from bus.security import kafka_admin

    upserted: list[tuple[str, str]] = []
    monkeypatch.setattr(kafka_admin, "admin_client", lambda _access: object())
    monkeypatch.setattr(kafka_admin, "upsert_scram",
                        lambda _admin, name, password, _t: upserted.append((name, password)))
    kafka_admin.rotate(None, tmp_path, "partner.northshire-csc")  # type: ignore[arg-type]
    stored = CredentialStore(tmp_path).require("partner.northshire-csc")
    assert upserted == [("partner.northshire-csc", stored.password)]
    assert not list((tmp_path / "credentials").glob(".*next*"))


def test_the_bundle_carries_no_key_of_a_partner_no_longer_in_the_data(tmp_path: Path) -> None:
    """Found in review: a removed partner's declarer key stayed in the register, and unlocked
    the emergency override for whoever held it; its event key still signed for it."""
    from bus.policy.bundle import current_signers
    from bus.provenance.registry import LocalSigners
    from schemas.envelope import Agency

    signers = LocalSigners(tmp_path)
    signers.issue_publisher(Agency.POLICE, "NSP")
    signers.issue_publisher(Agency.POLICE, "GONE")  # an organisation no longer a partner
    signers.issue_publisher(Agency.BUS, "SGBUS")  # the bus's own (the concern stage's)
    signers.issue_declarer("duty inspector", "northshire-police")
    signers.issue_declarer("duty inspector", "removed-partner")
    kept = current_signers(signers.registry(), PARTNERSHIP)
    assert sorted(k.org_id for k in kept.publishers) == ["NSP", "SGBUS"]
    assert [k.partner for k in kept.declarers] == ["northshire-police"]


def test_policy_bundle_out_carries_the_signing_key_register(tmp_path: Path) -> None:
    """Found in review: `sgbus policy bundle` built the bundle without the register, so an OPA
    serving it refused every event as signed by an unknown key."""
    import subprocess
    import sys
    import tarfile

    from bus.provenance.registry import LocalSigners
    from schemas.envelope import Agency

    home = tmp_path / "home"
    LocalSigners(home).issue_publisher(Agency.POLICE, "NSP")
    out = tmp_path / "bundle.tar.gz"
    done = subprocess.run([sys.executable, "-m", "bus", "policy", "bundle", "--out", str(out)], capture_output=True,
                          text=True, env={**os.environ, "SGBUS_HOME": str(home)}, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "1 publisher" in done.stdout
    with tarfile.open(out) as tar:
        members = {m.name.lstrip("/"): m for m in tar.getmembers()}
        data = json.loads(tar.extractfile(members["data.json"]).read())  # type: ignore[union-attr]
    assert [k["org_id"] for k in data["sgbus"]["signers"]["publishers"]] == ["NSP"]


def test_writing_a_private_file_into_a_shared_directory_neither_narrows_it_nor_follows_a_planted_link(
        tmp_path: Path) -> None:
    """Found in review: `--out /tmp/x` chmodded /tmp to 0700 (and dropped its sticky bit), and
    the temp file was opened by a fixed name, through a link another user had left there."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    theirs = tmp_path / "theirs.json"
    theirs.write_text("")
    (shared / ".key.json.tmp").symlink_to(theirs)
    write_private(shared / "key.json", "secret")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert theirs.read_text() == "" and (shared / "key.json").read_text() == "secret"
    assert stat.S_IMODE((shared / "key.json").stat().st_mode) == 0o600
    assert [p.name for p in shared.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()] == []


def test_certificates_are_handed_over_only_into_a_directory_of_ones_own(tmp_path: Path) -> None:
    from bus.exceptions import SgbusError
    from bus.security.files import handover_dir

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(SgbusError, match="one of your own"):
        handover_dir(shared)
    fresh = handover_dir(tmp_path / "fresh")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
