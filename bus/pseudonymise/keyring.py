"""Key material by key id: token master keys and sealing keys; never printed or logged."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bus.exceptions import KeyringError

CONTROLLER_DOMAIN = "controller"


def _kid(taken: Iterable[str] = ()) -> str:
    """A new key id, never one in `taken`: a repeated id (24 random bits) overwrote the old key,
    and every seal and token made under it could no longer be opened or resolved."""
    used = set(taken)
    while True:
        kid = "k" + secrets.token_hex(3)
        if kid not in used:
            return kid


@dataclass(frozen=True)
class KeySet:
    """Keys of one purpose: the active key id and every key id that may still be read."""

    active: str
    keys: dict[str, bytes] = field(repr=False)

    def get(self, kid: str) -> bytes:
        try:
            return self.keys[kid]
        except KeyError:
            raise KeyringError(f"unknown key id {kid}") from None

    def __repr__(self) -> str:
        return f"KeySet(active={self.active!r}, kids={sorted(self.keys)!r})"


@dataclass(frozen=True)
class Keyring:
    """`token` keys derive one HMAC key per linkage domain; `seal` keys are AES-256-GCM keys.
    (The audit signing key is kept apart: bus/audit/signer.py.)"""

    token: KeySet
    seal: KeySet
    # Derived per-domain keys, kept so HKDF runs once per (domain, key) and not per token.
    _derived: dict[tuple[str, str], bytes] = field(default_factory=dict, repr=False, compare=False)
    # ...and an HMAC-SHA256 already keyed with each, copied per token (setting up the HMAC was
    # much of a token's time); gone with this keyring, as its keys are.
    _keyed: dict[tuple[str, str], hmac.HMAC] = field(default_factory=dict, repr=False, compare=False)

    def domain_key(self, domain: str, kid: str | None = None) -> tuple[str, bytes]:
        """(kid, HMAC key) of a linkage domain; the controller domain is one of them."""
        kid = kid or self.token.active
        derived = self._derived.get((domain, kid))
        if derived is None:
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                        info=f"sgbus-token-domain:{domain}".encode())
            derived = self._derived[(domain, kid)] = hkdf.derive(self.token.get(kid))
        return kid, derived

    def domain_mac(self, domain: str, kid: str | None = None) -> tuple[str, hmac.HMAC]:
        """(kid, an HMAC-SHA256 keyed with the domain's key): copy it, then feed it one message."""
        kid, key = self.domain_key(domain, kid)
        keyed = self._keyed.get((domain, kid))
        if keyed is None:
            keyed = self._keyed[(domain, kid)] = hmac.new(key, digestmod=hashlib.sha256)
        return kid, keyed

    @classmethod
    def generate(cls) -> Keyring:
        tk, sk = _kid(), _kid()
        return cls(KeySet(tk, {tk: secrets.token_bytes(32)}), KeySet(sk, {sk: secrets.token_bytes(32)}))

    def rotated(self) -> Keyring:
        tk, sk = _kid(self.token.keys), _kid(self.seal.keys)
        return Keyring(
            KeySet(tk, {**self.token.keys, tk: secrets.token_bytes(32)}),
            KeySet(sk, {**self.seal.keys, sk: secrets.token_bytes(32)}),
        )

    def to_json(self) -> dict[str, Any]:
        def enc(ks: KeySet) -> dict[str, Any]:
            return {"active": ks.active,
                    "keys": {k: base64.b64encode(v).decode() for k, v in ks.keys.items()}}
        return {"version": 1, "token": enc(self.token), "seal": enc(self.seal)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Keyring:
        def dec(name: str) -> KeySet:
            part = data[name]
            keys = {k: base64.b64decode(v) for k, v in part["keys"].items()}
            if part["active"] not in keys or any(len(v) != 32 for v in keys.values()):
                raise KeyringError(f"keyring {name} keys are inconsistent")
            return KeySet(part["active"], keys)
        try:
            # An "audit" member (keyrings before the signing key moved out) is not read.
            return cls(dec("token"), dec("seal"))
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyringError(f"keyring is malformed ({type(exc).__name__})") from None


def save_keyring(keyring: Keyring, path: Path) -> None:
    """Write the keyring with mode 0600, atomically: into a new file of its own (never one
    already there, nor through a link someone left at a fixed temporary name), then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # O_EXCL, 0600
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(keyring.to_json(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        Path(name).replace(path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def keyring_lock(path: Path) -> Iterator[None]:
    """One change of the keyring at a time: two rotations at once could each drop the other's new
    keys, and a seal made with a dropped key could never be opened again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def load_keyring(path: Path) -> Keyring:
    if not path.is_file():
        raise KeyringError(f"no keyring at {path}; run `sgbus keys init`")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise KeyringError(f"keyring at {path} is unreadable") from None
    return Keyring.from_json(data)


def init_keyring(path: Path, *, exist_ok: bool = True) -> tuple[Keyring, bool]:
    """Load the keyring at `path`, or create it; returns (keyring, created)."""
    if path.is_file():
        if not exist_ok:
            raise KeyringError(f"a keyring already exists at {path}")
        return load_keyring(path), False
    keyring = Keyring.generate()
    save_keyring(keyring, path)
    return keyring, True


def keyring_from_settings(path: Path, secret_json: str | None) -> Keyring:
    """The keyring from the environment (a secret store's injection) if given, else from the file."""
    if secret_json:
        try:
            data = json.loads(secret_json)
        except json.JSONDecodeError:
            raise KeyringError("SGBUS_KEYRING_JSON is not valid JSON") from None
        return Keyring.from_json(data)
    return load_keyring(path)


class KeyringWatch:
    """The worker's keyring, re-read when its file changes, so a `sgbus keys rotate` reaches
    running workers before the first event sealed under the new key does. (A keyring given in
    SGBUS_KEYRING_JSON cannot change under a running process: restart to rotate.)"""

    def __init__(self, path: Path, secret_json: str | None = None) -> None:
        self.path, self._secret = path, secret_json
        self._stamp = self._file_stamp()
        self._keyring = keyring_from_settings(path, secret_json)

    def _file_stamp(self) -> tuple[int, int] | None:
        if self._secret:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def __call__(self, force: bool = False) -> Keyring:
        if self._secret:
            return self._keyring
        stamp = self._file_stamp()
        if force or stamp != self._stamp:
            try:
                self._keyring = load_keyring(self.path)
                self._stamp = stamp
            except KeyringError:
                pass  # half-written or gone: keep the keys we have; views that need more fail safely
        return self._keyring
