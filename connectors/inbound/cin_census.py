"""`cin-census`: the local authority's DfE Children in Need census (XML: `Message/Header`,
`Message/Children/Child` with `ChildIdentifiers`, `CINdetails`, `Section47`,
`ChildProtectionPlans`), ISO dates, no namespace.

Each CINdetails becomes a `social_care.referral_outcome` (no further action, early help,
assessment, or a section 47 enquiry, whichever came first), and each child protection plan a
`social_care.child_protection_plan` start (initial category) and, once ended, an end (latest
category), naming the team and duty line in policies/data/local_authorities.yaml. The return
must come from the publishing authority (its DfE LA number, Header/Source/LEA)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.base import Connector, Context, FileRejected, RecordError, code, envelope, parse_date, start_of
from connectors.codes import table
from connectors.xml import parse_xml as _parse
from connectors.xml import text as _text
from schemas.envelope import Agency

NAME = "cin-census"
MAPPING = "cin_census"


class LocalAuthority(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dfe_la_number: str = Field(pattern=r"^[0-9]{3}$")
    team_name: str = Field(min_length=1, max_length=120)
    duty_line: str = Field(pattern=r"^\+?[0-9 ]{10,16}$")


def load_local_authorities(data_dir: Path) -> dict[str, LocalAuthority]:
    """policies/data/local_authorities.yaml, validated; ValueError naming the field otherwise."""
    path = data_dir / "local_authorities.yaml"
    try:
        raw = (yaml.safe_load(path.read_text()) or {}).get("local_authorities") or {}
        return {str(k): LocalAuthority.model_validate(v) for k, v in raw.items()}
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise ValueError(f"{path}: {type(exc).__name__}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{path}: local_authorities.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") \
            from None


def _date(node: Any, path: str, where: str, required: bool = True) -> date | None:
    return parse_date(_text(node, path), where, required=required)


class CinCensus(Connector):
    name = NAME
    agency = Agency.SOCIAL_CARE
    summary = "DfE Children in Need census XML -> referral outcomes, child protection plan start/end"

    def records(self, path: Path, ctx: Context) -> Iterator[tuple[str, Any]]:
        root = _parse(path)
        if root.tag != "Message" or root.find("Children") is None:
            raise FileRejected("not a CIN census return: expected Message/Children")
        la = ctx.settings.get("local_authorities", {}).get(ctx.org_id)
        lea = _text(root, "Header/Source/LEA")
        if la is not None and lea != la.dfe_la_number:  # its own return only (and the header must say whose)
            raise FileRejected(f"Header/Source/LEA is not {ctx.org_id}'s DfE LA number {la.dfe_la_number}")
        for number, child in enumerate(root.iterfind("Children/Child"), start=1):
            yield f"record {number}", child

    def to_events(self, child: Any, ctx: Context) -> list[dict[str, Any]]:
        la = ctx.settings.get("local_authorities", {}).get(ctx.org_id)
        if la is None:
            raise RecordError("--org", "has no entry in policies/data/local_authorities.yaml", "unknown_authority")
        ids = child.find("ChildIdentifiers")
        if ids is None:
            raise RecordError("ChildIdentifiers", "is required", "missing")
        local_id = _text(ids, "LAchildID")
        if not local_id:
            raise RecordError("ChildIdentifiers/LAchildID", "is required", "missing")
        identifiers = {"la_child_id": f"{ctx.org_id}-{local_id.upper()}"}
        if _text(ids, "UPN"):
            identifiers["upn"] = _text(ids, "UPN") or ""
        born = _date(ids, "PersonBirthDate", "ChildIdentifiers/PersonBirthDate", required=False)
        due = _date(ids, "ExpectedPersonBirthDate", "ChildIdentifiers/ExpectedPersonBirthDate", required=False)
        subject = {"identifiers": identifiers, "date_of_birth": born.isoformat() if born else None,
                   "expected_delivery_date": due.isoformat() if due and not born else None}
        events: list[dict[str, Any]] = []
        for i, cin in enumerate(child.iterfind("CINdetails"), start=1):
            at = f"CINdetails[{i}]"
            referred = _date(cin, "CINreferralDate", f"{at}/CINreferralDate")
            assert referred is not None
            source = code(table(MAPPING, "referral_source"), _text(cin, "ReferralSource"), f"{at}/ReferralSource")
            outcome = self._outcome(cin, at, referred)
            if outcome is not None:
                kind, when = outcome
                events.append(envelope(
                    connector=NAME, key=(local_id, "referral", referred), event_type="social_care.referral_outcome.v1",
                    agency=Agency.SOCIAL_CARE, ctx=ctx, subject=subject, occurred_at=min(start_of(when), ctx.now),
                    payload={"referral_received_at": start_of(referred).isoformat(), "referral_source": source,
                             "outcome": kind, "outcome_at": min(start_of(when), ctx.now).isoformat(),
                             "local_authority_code": ctx.org_id}))
            for j, plan in enumerate(cin.iterfind("ChildProtectionPlans"), start=1):
                events += self._plan(plan, f"{at}/ChildProtectionPlans[{j}]", local_id, subject, la, ctx)
        return events

    def _outcome(self, cin: Any, at: str, referred: date) -> tuple[str, date] | None:
        nfa = code(table(MAPPING, "yes_no"), _text(cin, "ReferralNFA"), f"{at}/ReferralNFA")
        if nfa == "true":
            return "no_further_action", referred
        steps: list[tuple[date, str]] = []
        for k, s47 in enumerate(cin.iterfind("Section47"), start=1):
            started = _date(s47, "S47ActualStartDate", f"{at}/Section47[{k}]/S47ActualStartDate")
            assert started is not None
            steps.append((started, "strategy_discussion_s47"))
        for k, assessment in enumerate(cin.iterfind("Assessments"), start=1):
            started = _date(assessment, "AssessmentActualStartDate",
                            f"{at}/Assessments[{k}]/AssessmentActualStartDate")
            assert started is not None
            steps.append((started, "child_and_family_assessment"))
        if steps:
            when, kind = min(steps)
            return kind, when
        closure = code(table(MAPPING, "reason_for_closure"), _text(cin, "ReasonForClosure"), f"{at}/ReasonForClosure",
                       required=False)
        closed = _date(cin, "CINclosureDate", f"{at}/CINclosureDate", required=False)
        if closure in ("early_help", "no_further_action") and closed is not None:
            return closure, closed
        return None  # referral still open, no step recorded yet: nothing to tell

    def _plan(self, plan: Any, at: str, local_id: str, subject: dict[str, Any], la: LocalAuthority,
              ctx: Context) -> list[dict[str, Any]]:
        start = _date(plan, "CPPstartDate", f"{at}/CPPstartDate")
        end = _date(plan, "CPPendDate", f"{at}/CPPendDate", required=False)
        assert start is not None
        initial = code(table(MAPPING, "category_of_abuse"), _text(plan, "InitialCategoryOfAbuse"),
                       f"{at}/InitialCategoryOfAbuse")
        latest = code(table(MAPPING, "category_of_abuse"), _text(plan, "LatestCategoryOfAbuse"),
                      f"{at}/LatestCategoryOfAbuse", required=end is not None)
        common = {"local_authority_code": ctx.org_id, "team_name": la.team_name, "team_contact": la.duty_line}
        out = [envelope(connector=NAME, key=(local_id, "cpp", start, "start"),
                        event_type="social_care.child_protection_plan.v1", agency=Agency.SOCIAL_CARE, ctx=ctx,
                        subject=subject, occurred_at=min(start_of(start), ctx.now),
                        payload={"action": "start", "plan_start": start.isoformat(), "category": initial, **common})]
        if end is not None:
            out.append(envelope(connector=NAME, key=(local_id, "cpp", start, "end"),
                                event_type="social_care.child_protection_plan.v1", agency=Agency.SOCIAL_CARE,
                                ctx=ctx, subject=subject, occurred_at=min(start_of(end), ctx.now),
                                payload={"action": "end", "plan_start": start.isoformat(), "plan_end": end.isoformat(),
                                         "category": latest or initial, **common}))
        return out
