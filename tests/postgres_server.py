"""A throwaway PostgreSQL server for tests, started from the machine's Debian package
(`postgresql-NN`, binaries under /usr/lib/postgresql/NN/bin)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bus.security.pki import LOCAL_HOSTS, PartnershipCA
from bus.stack import free_port


def find_bindir() -> Path | None:
    """The newest installed server's bin directory, if any."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    found.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    return found[-1] if found else None


@dataclass
class Postgres:
    root: Path
    bindir: Path
    port: int
    proc: subprocess.Popen[bytes]
    as_user: list[str]

    def dsn(self, database: str = "postgres", user: str = "sgbus") -> str:
        """`user` logs in without a password (the test server trusts every login)."""
        # TCP needs TLS with the server's certificate checked against its address (the audit
        # store refuses anything weaker), as a deployment's DSN would.
        ca = self.root / "pki" / "ca.pem"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}?sslmode=verify-full&sslrootcert={ca}"

    def create_login(self, name: str) -> None:
        """A login role with no rights of its own (as an operator makes one per component)."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE ROLE "{name}" LOGIN')

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "stop", "-D", str(self.root / "data"),
                        "-m", "fast", "-w"], capture_output=True, timeout=60, check=False)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(timeout_s: float = 60.0) -> Postgres:
    import psycopg

    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql: install Debian's package "
                           "(apt-get install postgresql-15) to run the PostgreSQL audit tests")
    root = Path(tempfile.mkdtemp(prefix="sgbus-pg-"))
    root.chmod(0o755)
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: use the package's own user
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    init = subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(root / "data"), "-A", "trust",
                           "-U", "sgbus", "-E", "UTF8", "--no-sync"], capture_output=True, text=True, check=False)
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stderr[-500:]}")
    issued = PartnershipCA(root).issue("postgres", server=True, client=False, hosts=LOCAL_HOSTS)
    (root / "pki").chmod(0o755)
    (root / "pki" / "ca.pem").chmod(0o644)  # the CA certificate is public
    for src, name in ((issued.cert, "server.crt"), (issued.key, "server.key")):
        dest = root / "data" / name
        shutil.copyfile(src, dest)
        dest.chmod(0o600)
        if as_user:
            os.chown(dest, pw.pw_uid, pw.pw_gid)
    port = free_port()
    log = (root / "postgres.log").open("wb")
    proc = subprocess.Popen([*as_user, str(bindir / "postgres"), "-D", str(root / "data"), "-p", str(port),
                             "-k", str(root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                             "-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key"],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = Postgres(root, bindir, port, proc, as_user)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {(root / 'postgres.log').read_text()[-500:]}")
        try:
            psycopg.connect(server.dsn(), connect_timeout=2).close()
            return server
        except psycopg.OperationalError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"postgres did not accept connections within {timeout_s:.0f}s")
