"""Push Rego policies and validated partnership data into a running OPA server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bus.exceptions import PolicyUnavailable
from bus.policy.data import Partnership, load_partnership
from bus.policy.revision import policy_revision, rego_files
from bus.security.opa_auth import OpaAccess


@dataclass(frozen=True)
class LoadedPolicies:
    revision: str
    policy_ids: list[str]


def load_policies(access: OpaAccess, policies_dir: Path) -> LoadedPolicies:
    """Validate the data, then upload data, revision and policies; returns the revision."""
    partnership = load_partnership(policies_dir / "data")
    data = partnership.as_opa_data()
    revision = policy_revision(policies_dir, data)
    client = access.sync_client()
    try:
        client.update_or_create_data(data, "sgbus/partnership")
        ids = []
        for path in rego_files(policies_dir):
            policy_id = str(path.relative_to(policies_dir)).removesuffix(".rego")
            client.update_policy_from_string(path.read_text(), policy_id, rego_compat=False)
            ids.append(policy_id)
        # The revision goes last: a worker that sees it knows the rest is loaded.
        client.update_or_create_data({"revision": revision}, "sgbus/meta")
    except Exception as exc:  # the client raises several unrelated types
        hint = " (is SGBUS_OPA_TOKEN the admin token?)" if "401" in str(exc) or "unauthorized" in str(exc) else ""
        raise PolicyUnavailable(
            f"could not load policies into OPA at {access.url}: {type(exc).__name__}: {exc}{hint}") from None
    finally:
        client.close_connection()
    return LoadedPolicies(revision, ids)


def fetch_partnership(access: OpaAccess) -> tuple[Partnership, str]:
    """The partnership data and revision OPA has loaded (the worker routes with the same data)."""
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
    return Partnership.model_validate(result["partnership"]), str(result["meta"]["revision"])
