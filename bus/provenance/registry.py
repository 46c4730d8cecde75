"""The partnership's register of signing keys (public halves only) and the local store of the
private halves that `sgbus partners keys issue` hands to publishers and declarers.

The register is partnership data: `sgbus stack up` / `sgbus policy reload` pack it into the
signed policy bundle (`data.sgbus.signers`), so workers read it from OPA and nobody can add a
key without the policy signing key. Private keys never enter the register or the bundle.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from bus.exceptions import ConfigurationError
from bus.provenance.signing import b64url, b64url_decode, declare_override, sign_event, usable_public_key
from bus.security.files import private_dir, write_private
from schemas.envelope import Agency

_KID = r"^[a-z0-9][a-z0-9-]{2,40}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _raw_key(value: str) -> str:
    try:
        raw = b64url_decode(value)
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ValueError("not a raw Ed25519 public key (32 bytes, base64url)") from None
    if not usable_public_key(raw):
        raise ValueError("an Ed25519 public key of small order or encoded non-canonically: it could vouch "
                         "for forged signatures, so it is refused (issue the organisation a new key)")
    return value


RawPublicKey = Annotated[str, AfterValidator(_raw_key)]


class PublisherKey(_Model):
    """A source organisation's key: events claiming `org_id` must be signed with it."""

    kid: str = Field(pattern=_KID)
    agency: Agency
    org_id: str
    public_key: RawPublicKey = Field(description="raw Ed25519 public key, base64url")
    issued_at: str

    def key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(b64url_decode(self.public_key))


class DeclarerKey(_Model):
    """A named role's key (e.g. a police inspector, a MASH manager) for override declarations."""

    kid: str = Field(pattern=_KID)
    role: str = Field(min_length=2, max_length=80)
    partner: str
    public_key: RawPublicKey
    issued_at: str

    def key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(b64url_decode(self.public_key))


class SignerRegistry(_Model):
    publishers: list[PublisherKey] = Field(default_factory=list)
    declarers: list[DeclarerKey] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_kids(self) -> SignerRegistry:
        kids = [k.kid for k in self.publishers] + [k.kid for k in self.declarers]
        if len(kids) != len(set(kids)):
            raise ValueError("key ids must be unique across publishers and declarers")
        return self

    @cached_property
    def _publishers(self) -> dict[str, PublisherKey]:
        return {k.kid: k for k in self.publishers}

    @cached_property
    def _declarers(self) -> dict[str, DeclarerKey]:
        return {k.kid: k for k in self.declarers}

    @cached_property
    def _public_keys(self) -> dict[str, Ed25519PublicKey]:
        # kids are unique across both lists (validated), so one map cannot confuse the two
        keys = {k.kid: k.key() for k in self.publishers}
        keys.update({k.kid: k.key() for k in self.declarers})
        return keys

    def publisher(self, kid: str) -> PublisherKey | None:
        return self._publishers.get(kid)

    def declarer(self, kid: str) -> DeclarerKey | None:
        return self._declarers.get(kid)

    def public_key(self, kid: str) -> Ed25519PublicKey:
        return self._public_keys[kid]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _raw_public(key: Ed25519PrivateKey) -> str:
    return b64url(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def _raw_private(key: Ed25519PrivateKey) -> str:
    return b64url(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption()))


class LocalSigners:
    """`<home>/partnership/signers.json` (the register) and `<home>/signing/<kid>.json` (0600,
    the private keys the local stack's publishers and declarers use)."""

    def __init__(self, home: Path) -> None:
        self.register_path = home / "partnership" / "signers.json"
        self.private_dir = home / "signing"
        self._keys: dict[str, Ed25519PrivateKey] = {}
        self._newest: dict[tuple[str, str], str] = {}

    # -- the register ----------------------------------------------------------------------------
    def registry(self) -> SignerRegistry:
        if not self.register_path.is_file():
            return SignerRegistry()
        try:
            return SignerRegistry.model_validate_json(self.register_path.read_text())
        except ValueError:
            raise ConfigurationError(f"signing key register is unreadable: {self.register_path}") from None

    def _save(self, registry: SignerRegistry) -> None:
        self._newest.clear()
        private_dir(self.register_path.parent)
        write_private(self.register_path, registry.model_dump_json(indent=2))

    # -- issuing ---------------------------------------------------------------------------------
    def _new(self, kind: str, meta: dict[str, str]) -> tuple[str, Ed25519PrivateKey]:
        key = Ed25519PrivateKey.generate()
        kid = f"{kind}-{secrets.token_hex(4)}"
        private_dir(self.private_dir)
        write_private(self.private_dir / f"{kid}.json", json.dumps(
            {"kid": kid, "kind": kind, "private_key": _raw_private(key), **meta}))
        return kid, key

    def issue_publisher(self, agency: Agency, org_id: str, *, replace: bool = False) -> PublisherKey:
        """A new key for the organisation; `replace` revokes its earlier keys."""
        kid, key = self._new("pub", {"agency": agency.value, "org_id": org_id})
        entry = PublisherKey(kid=kid, agency=agency, org_id=org_id, public_key=_raw_public(key), issued_at=_now())
        reg = self.registry()
        keep = [k for k in reg.publishers if not (replace and k.org_id == org_id and k.agency == agency)]
        for gone in set(k.kid for k in reg.publishers) - set(k.kid for k in keep):
            (self.private_dir / f"{gone}.json").unlink(missing_ok=True)
        self._save(SignerRegistry(publishers=[*keep, entry], declarers=reg.declarers))
        return entry

    def issue_declarer(self, role: str, partner: str) -> DeclarerKey:
        kid, key = self._new("decl", {"role": role, "partner": partner})
        entry = DeclarerKey(kid=kid, role=role, partner=partner, public_key=_raw_public(key), issued_at=_now())
        reg = self.registry()
        self._save(SignerRegistry(publishers=reg.publishers, declarers=[*reg.declarers, entry]))
        return entry

    def revoke(self, kid: str) -> bool:
        reg = self.registry()
        kept = SignerRegistry(publishers=[k for k in reg.publishers if k.kid != kid],
                              declarers=[k for k in reg.declarers if k.kid != kid])
        if kept == reg:
            return False
        self._save(kept)
        (self.private_dir / f"{kid}.json").unlink(missing_ok=True)
        return True

    def ensure_publishers(self, sources: Iterable[tuple[Agency, str]]) -> list[PublisherKey]:
        """A key for every (agency, org) that has none yet; returns the new ones."""
        have = {(k.agency, k.org_id) for k in self.registry().publishers}
        return [self.issue_publisher(agency, org) for agency, org in sorted(set(sources)) if (agency, org) not in have]

    # -- using the private keys --------------------------------------------------------------------
    def _private(self, kid: str) -> Ed25519PrivateKey:
        if kid in self._keys:
            return self._keys[kid]
        try:
            raw = json.loads((self.private_dir / f"{kid}.json").read_text())["private_key"]
            key = self._keys[kid] = Ed25519PrivateKey.from_private_bytes(b64url_decode(raw))
            return key
        except FileNotFoundError:
            raise ConfigurationError(f"no private key {kid} under {self.private_dir}") from None
        except (ValueError, KeyError, TypeError):
            raise ConfigurationError(f"private key file of {kid} is unreadable") from None

    def publisher_kid(self, agency: str, org_id: str) -> str:
        """The newest key of the organisation with its private half here (cached per object)."""
        cached = self._newest.get((agency, org_id))
        if cached is not None:
            return cached
        keys = [k for k in self.registry().publishers if k.agency == agency and k.org_id == org_id
                and (self.private_dir / f"{k.kid}.json").is_file()]
        if not keys:
            raise ConfigurationError(
                f"no signing key for {agency} organisation {org_id!r} under {self.private_dir}; "
                f"run `sgbus partners keys issue {org_id}`")
        kid = self._newest[(agency, org_id)] = max(keys, key=lambda k: k.issued_at).kid
        return kid

    def sign(self, event: dict[str, Any]) -> dict[str, Any]:
        """`event` signed with the newest local key of its source organisation."""
        source = event.get("source") or {}
        kid = self.publisher_kid(str(source.get("agency")), str(source.get("org_id")))
        return sign_event(event, self._private(kid), kid)

    def declare(self, event: dict[str, Any], role: str) -> dict[str, Any]:
        """`event` with its urgency declared by the newest local key of `role` (not yet signed)."""
        keys = [k for k in self.registry().declarers if k.role == role]
        if not keys:
            raise ConfigurationError(f"no declarer key for role {role!r}; run `sgbus partners keys issue "
                                     f"--role '{role}' PARTNER_ID`")
        kid = max(keys, key=lambda k: k.issued_at).kid
        return declare_override(event, self._private(kid), kid, role)


def load_private_key(path: Path) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A signer from a publisher's key file (`sgbus partners keys issue --out FILE`)."""
    try:
        raw = json.loads(path.read_text())
        kid, kind = str(raw["kid"]), str(raw["kind"])
        key = Ed25519PrivateKey.from_private_bytes(b64url_decode(raw["private_key"]))
    except FileNotFoundError:
        raise ConfigurationError(f"no key file at {path}") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigurationError(f"{path} is not an sgbus signing key file") from None
    if kind != "pub":
        raise ConfigurationError(f"{path} is a {kind} key, not a publisher's signing key")
    return lambda event: sign_event(event, key, kid)
