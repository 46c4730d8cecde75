"""Signed policy bundles: the only way policies and partnership data reach OPA.

`opa build --signing-key` packs the Rego policies, the validated partnership data, the
revision and OPA's own API authorisation (policies/system) into one bundle signed with the
partnership's policy key (ES256). OPA is started with the verification key and loads nothing
else: a bundle that is unsigned, signed by another key or altered after signing is refused
(OPA does not start), and the bundle's roots (`sgbus`, `system`) cannot be written over REST.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bus import toolchain
from bus.exceptions import PolicyDataError
from bus.policy.data import Partnership, catalogue, load_partnership
from bus.policy.revision import policy_revision, rego_files
from bus.provenance.registry import SignerRegistry
from bus.security.files import private_dir, write_private
from schemas.envelope import Agency

SIGNING_ALG = "ES256"
ROOTS = ("sgbus", "system")


@dataclass(frozen=True)
class PolicyKey:
    """The partnership's policy signing key (private) and its verification key (public)."""

    private: Path
    public: Path


def ensure_policy_key(home: Path) -> PolicyKey:
    """`<home>/pki/policy-signing.key` (0600) and `.pub.pem`, created on first use."""
    pki = private_dir(home / "pki")
    key = PolicyKey(pki / "policy-signing.key", pki / "policy-signing.pub.pem")
    if not (key.private.is_file() and key.public.is_file()):
        new_policy_key(key)
    return key


def new_policy_key(key: PolicyKey) -> PolicyKey:
    private = ec.generate_private_key(ec.SECP256R1())
    write_private(key.private, private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    write_private(key.public, private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


@dataclass(frozen=True)
class Bundle:
    path: Path
    revision: str


def bundle_extra(signers: SignerRegistry | None) -> dict[str, Any]:
    """Bundle data besides the partnership: the event catalogue and the signing key register."""
    return {"catalogue": catalogue(), "signers": (signers or SignerRegistry()).model_dump(mode="json")}


def current_signers(signers: SignerRegistry, partnership: Partnership) -> SignerRegistry:
    """The register without the keys of organisations and partners no longer in the partnership
    (a removed partner's declarer key must not unlock an emergency override, nor its event key
    sign for it); the bus's own key (the concern stage's) stays."""
    sources = {(p.agency, p.org_id) for p in partnership.partners}
    ids = {p.id for p in partnership.partners}
    return SignerRegistry(
        publishers=[k for k in signers.publishers if k.agency == Agency.BUS or (k.agency, k.org_id) in sources],
        declarers=[k for k in signers.declarers if k.partner in ids])


def build_bundle(policies_dir: Path, out: Path, key: PolicyKey, token_hashes: dict[str, str],
                 *, signers: SignerRegistry | None = None, sign: bool = True) -> Bundle:
    """Validate the partnership data and build the signed bundle at `out`. `sign=False`
    exists only so tests can show that OPA refuses an unsigned bundle."""
    partnership = load_partnership(policies_dir / "data")
    data = partnership.as_opa_data()
    extra = bundle_extra(current_signers(signers, partnership) if signers is not None else None)
    revision = policy_revision(policies_dir, data, extra)
    authz = policies_dir / "system" / "authz.rego"
    if not authz.is_file():
        raise PolicyDataError(f"{authz}: missing (OPA's API authorisation policy)")
    with tempfile.TemporaryDirectory(prefix="sgbus-bundle-") as tmp:
        src = Path(tmp) / "bundle"
        for rego in [*rego_files(policies_dir), authz]:
            dest = src / rego.relative_to(policies_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(rego, dest)
        files = {
            "sgbus/partnership/data.json": data,
            "sgbus/catalogue/data.json": extra["catalogue"],
            "sgbus/signers/data.json": extra["signers"],
            "sgbus/meta/data.json": {"revision": revision},
            "system/sgbus_tokens/data.json": token_hashes,
            ".manifest": {"revision": revision, "roots": list(ROOTS)},
        }
        for name, value in files.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_text(json.dumps(value, sort_keys=True))
        built = Path(tmp) / "bundle.tar.gz"
        # Run inside the bundle so the module names in it are its own paths, not a temp dir's.
        args = [str(toolchain.ensure_opa().path), "build", "--bundle", ".", "--output", str(built)]
        if sign:
            args += ["--signing-key", str(key.private.resolve()), "--signing-alg", SIGNING_ALG]
        proc = subprocess.run(args, capture_output=True, text=True, check=False, cwd=src)
        if proc.returncode != 0:
            raise PolicyDataError(f"opa build failed on {policies_dir}: "
                                  f"{(proc.stderr or proc.stdout).strip()}")
        write_private(out, built.read_bytes())
    return Bundle(out, revision)
