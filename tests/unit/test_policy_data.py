from pathlib import Path

import pytest

from bus.exceptions import PolicyDataError
from bus.policy.data import load_partnership
from bus.routing import candidates

REPO_DATA = Path(__file__).parents[2] / "policies" / "data"


def _copy(tmp_path: Path) -> Path:
    for f in REPO_DATA.glob("*.yaml"):
        (tmp_path / f.name).write_text(f.read_text())
    return tmp_path


def test_repository_partnership_data_is_valid() -> None:
    p = load_partnership(REPO_DATA)
    assert {x.agency for x in p.partners} == {"police", "nhs", "school", "social_care", "bus"}
    assert p.partner("northshire-csc") is not None


def test_unknown_partner_in_agreement_is_reported_with_file_and_line(tmp_path: Path) -> None:
    data = _copy(tmp_path)
    text = (data / "agreements.yaml").read_text().replace("recipients: [northshire-nhs-uec]",
                                                          "recipients: [northshire-nhs-typo]")
    (data / "agreements.yaml").write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "northshire-nhs-typo" in t)
    with pytest.raises(PolicyDataError) as info:
        load_partnership(data)
    assert f"agreements.yaml:{line}: recipients: unknown partner northshire-nhs-typo" in str(info.value)


def test_bad_identifier_mode_is_reported_with_line(tmp_path: Path) -> None:
    data = _copy(tmp_path)
    text = (data / "agreements.yaml").read_text().replace("{upn: token}", "{upn: publish}")
    (data / "agreements.yaml").write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "upn: publish" in t)
    with pytest.raises(PolicyDataError) as info:
        load_partnership(data)
    assert f"agreements.yaml:{line}: agreements.4.identifiers.upn" in str(info.value)


def test_field_not_in_payload_is_reported(tmp_path: Path) -> None:
    data = _copy(tmp_path)
    text = (data / "agreements.yaml").read_text().replace("fields: [incident_at,", "fields: [shoe_size, incident_at,")
    (data / "agreements.yaml").write_text(text)
    with pytest.raises(PolicyDataError, match="shoe_size is not a payload field"):
        load_partnership(data)


def test_invalid_yaml_is_reported_with_line(tmp_path: Path) -> None:
    data = _copy(tmp_path)
    (data / "partners.yaml").write_text("partners:\n  - id: [unclosed\n")
    with pytest.raises(PolicyDataError, match=r"partners.yaml:\d+: not valid YAML"):
        load_partnership(data)


def test_candidates_are_subscribers_except_the_publisher() -> None:
    p = load_partnership(REPO_DATA)
    got = {c.recipient for c in candidates(p, "police.domestic_abuse_incident.v1", "police", "NSP")}
    assert got == {"oakfield-primary", "riverside-academy", "northshire-csc", "southshire-csc"}
    assert candidates(p, "social_care.child_protection_plan.v1", "social_care", "N01")[0].recipient == (
        "northshire-nhs-uec"
    )


def test_no_partner_may_have_the_buss_own_linkage_domain(tmp_path: Path) -> None:
    """Tokens in the controller domain are what sg.events and the audit store carry."""
    data = _copy(tmp_path)
    text = (data / "partners.yaml").read_text().replace("linkage_domain: education", "linkage_domain: controller", 1)
    (data / "partners.yaml").write_text(text)
    with pytest.raises(PolicyDataError, match="linkage_domain: controller is the bus's own domain"):
        load_partnership(data)


def test_two_partners_with_one_agency_and_org_id_are_refused(tmp_path: Path) -> None:
    """Found in review: a copied entry under a new id passed every check, and policy then sent
    the new partner what the original receives (both count as that source)."""
    data = _copy(tmp_path)
    text = (data / "partners.yaml").read_text().replace("org_id: S01", "org_id: N01", 1)
    (data / "partners.yaml").write_text(text)
    with pytest.raises(PolicyDataError, match="org_id: N01 \\(social_care\\) is already partner northshire-csc's"):
        load_partnership(data)


def test_a_key_id_already_in_the_keyring_is_never_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: a rotation that drew an id in use (24 random bits) overwrote that key,
    and everything sealed or tokenised under it was lost."""
    import secrets

    from bus.pseudonymise.keyring import Keyring

    keyring = Keyring.generate()
    used = keyring.token.active
    draws = iter([used[1:], used[1:], "abcdef", "abcdef", "123456"])
    monkeypatch.setattr(secrets, "token_hex", lambda _n: next(draws))
    rotated = keyring.rotated()
    assert rotated.token.keys[used] == keyring.token.keys[used]
    assert len(rotated.token.keys) == 2 and len(rotated.seal.keys) == 2


def test_an_emergency_purpose_no_recipient_subscribes_for_is_refused(tmp_path: Path) -> None:
    """Found in a second reading: `child_protection` for `child-protection` loaded, and the
    override silently never applied."""
    data = _copy(tmp_path)
    text = (data / "emergency.yaml").read_text().replace("recipient_purposes: [child-protection]",
                                                          "recipient_purposes: [child_protection]")
    (data / "emergency.yaml").write_text(text)
    with pytest.raises(PolicyDataError, match=r"emergency.yaml:\d+: recipient_purposes: child_protection is no"):
        load_partnership(data)


def test_a_second_subscription_of_a_partner_to_one_event_type_is_refused(tmp_path: Path) -> None:
    """Policy is asked once per partner and event type: a second subscription (another purpose)
    was ignored, or, listed first, took the emergency override from the police."""
    data = _copy(tmp_path)
    with (data / "subscriptions.yaml").open("a") as f:
        f.write("  - partner: northshire-police\n    event_types: [school.dsl_concern.v1]\n"
                "    purpose: crime-prevention\n")
    with pytest.raises(PolicyDataError, match=r"northshire-police already subscribes to school\.dsl_concern\.v1"):
        load_partnership(data)


def test_only_partners_the_override_can_reach_keep_deliveries_for_its_retention() -> None:
    from bus.topics import DAY_MS, deliver_retention_ms

    p = load_partnership(REPO_DATA)
    assert p.emergency is not None
    assert deliver_retention_ms(p, "northshire-csc") >= p.emergency.retention_days * DAY_MS
    # the youth justice service is registered as social care, but the override never reaches it
    assert deliver_retention_ms(p, "northshire-yjs") < p.emergency.retention_days * DAY_MS
