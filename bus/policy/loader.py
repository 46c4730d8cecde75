"""Read back what OPA has loaded (the signed bundle's partnership data and revision)."""

from __future__ import annotations

from bus.exceptions import PolicyUnavailable
from bus.policy.data import Partnership
from bus.provenance.registry import SignerRegistry
from bus.security.opa_auth import OpaAccess


def fetch_partnership(access: OpaAccess) -> tuple[Partnership, str]:
    """The partnership data and revision OPA has loaded (the worker routes with the same data)."""
    partnership, revision, _signers = fetch_policy_state(access)
    return partnership, revision


def fetch_signers(access: OpaAccess) -> SignerRegistry:
    """The signing key register in the bundle OPA has loaded (what ingest verifies against)."""
    return fetch_policy_state(access)[2]


def fetch_policy_state(access: OpaAccess) -> tuple[Partnership, str, SignerRegistry]:
    client = access.sync_client()
    try:
        data = client.get_data("sgbus")
    except Exception as exc:  # the client raises several unrelated types
        raise PolicyUnavailable(f"could not read policy data from OPA: {type(exc).__name__}") from None
    finally:
        client.close_connection()
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, dict) or "partnership" not in result or "meta" not in result:
        raise PolicyUnavailable("OPA has no sgbus policy data loaded (run `sgbus policy reload`)")
    return (Partnership.model_validate(result["partnership"]), str(result["meta"]["revision"]),
            SignerRegistry.model_validate(result.get("signers") or {}))
