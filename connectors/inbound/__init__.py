"""The inbound connectors, by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.base import Connector
from connectors.inbound.cin_census import CinCensus, load_local_authorities
from connectors.inbound.ctf import Ctf
from connectors.inbound.encompass import Encompass
from connectors.inbound.nhs_fhir import NhsFhir
from connectors.inbound.school_sessions import SchoolSessions, load_thresholds
from connectors.inbound.ssda903 import Ssda903

CONNECTORS: dict[str, type[Connector]] = {
    CinCensus.name: CinCensus,
    Ctf.name: Ctf,
    Encompass.name: Encompass,
    NhsFhir.name: NhsFhir,
    SchoolSessions.name: SchoolSessions,
    Ssda903.name: Ssda903,
}


def _laestab(data_dir: Path) -> dict[str, str]:
    """Schools' LAESTAB numbers by org_id (partners.yaml)."""
    from bus.policy.data import load_partnership

    return {p.org_id: p.dfe_laestab for p in load_partnership(data_dir).partners if p.dfe_laestab}


def connector_settings(name: str, data_dir: Path) -> dict[str, Any]:
    """Partnership data a connector decides with (the attendance thresholds)."""
    if name == SchoolSessions.name:
        return {"thresholds": load_thresholds(data_dir), "local_authorities": load_local_authorities(data_dir),
                "laestab": _laestab(data_dir)}
    if name == CinCensus.name:
        return {"local_authorities": load_local_authorities(data_dir)}
    if name == Ctf.name:
        return {"local_authorities": load_local_authorities(data_dir), "thresholds": load_thresholds(data_dir),
                "laestab": _laestab(data_dir)}
    return {}
