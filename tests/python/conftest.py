"""A shoal cluster of separate processes for the Python client tests, with authentication:
a coordinator with a static token and a user for the Basic handshake, two workers sharing
the cluster secret.

Uses the binary built by `make test-python` (target/ci/shoal, or SHOAL_BIN). The data is
TPC-H lineitem at scale 0.2 (1,199,969 rows, enough for a result of over a million rows),
generated once by `shoal tpch` under target/shoal-test-data.
"""

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import time

import pyarrow.flight as flight
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "python-test-token-0123456789"
USER, PASSWORD = "analyst", "a-long-test-password"
# A second client, and an admin (who sees and cancels everyone's statements).
RIVAL, RIVAL_PASSWORD = "rival", "another-long-test-password"
ADMIN, ADMIN_PASSWORD = "operator", "the-operators-long-password"
ANALYST, ANALYST_PASSWORD = "reader", "a-long-read-only-password"  # role = "analyst"
CLUSTER_SECRET = "python-test-cluster-secret-0123456789"
SCALE = "0.2"
ROWS = 1_199_969


def shoal_bin():
    if os.environ.get("SHOAL_BIN"):
        return os.environ["SHOAL_BIN"]
    for profile in ("ci", "debug"):
        candidate = ROOT / "target" / profile / "shoal"
        if candidate.exists():
            return str(candidate)
    raise RuntimeError(
        "build shoal first: cargo build --workspace --bins --examples --profile ci"
    )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_data(binary):
    root = ROOT / "target" / "shoal-test-data" / f"tpch-{SCALE}-2sites"
    if not (root / ".shoal-tpch").exists():
        subprocess.run([binary, "tpch", "--scale", SCALE, "--sites", "2", "--out", str(root)],
                       check=True, stdout=subprocess.DEVNULL)
    return root


class Cluster:
    def __init__(self, url, port):
        self.url = url
        self.port = port

    def flight_client(self):
        """A pyarrow.flight client logged in with the token."""
        return flight.FlightClient(self.url), flight.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {TOKEN}".encode())])

    def login(self, user, password):
        """A pyarrow.flight client logged in as `user` (Basic handshake, bearer token)."""
        client = flight.FlightClient(self.url)
        header = client.authenticate_basic_token(user, password)
        return client, flight.FlightCallOptions(headers=[header])

    def action(self, name, body=b"", as_client=None):
        client, options = as_client or self.flight_client()
        results = list(client.do_action(flight.Action(name, body), options))
        if as_client is None:
            client.close()
        return json.loads(b"".join(r.body.to_pybytes() for r in results))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("auth")) as started:
        yield started


@contextlib.contextmanager
def running_cluster(scratch):
    """Starts the processes (auth file under `scratch`); kills them on exit."""
    binary = shoal_bin()
    data = test_data(binary)
    auth = scratch / "auth.toml"
    auth.write_text(
        f'[[users]]\nname = "{USER}"\npassword = "{PASSWORD}"\n'
        f'[[users]]\nname = "{RIVAL}"\npassword = "{RIVAL_PASSWORD}"\n'
        f'[[users]]\nname = "{ADMIN}"\npassword = "{ADMIN_PASSWORD}"\nrole = "admin"\n'
        f'[[users]]\nname = "{ANALYST}"\npassword = "{ANALYST_PASSWORD}"\nrole = "analyst"\n')
    auth.chmod(0o600)
    env = dict(os.environ, SHOAL_TOKENS=TOKEN, SHOAL_CLUSTER_SECRET=CLUSTER_SECRET)
    port = free_port()
    url = f"grpc://127.0.0.1:{port}"
    procs = [subprocess.Popen([binary, "coordinator", "--listen", f"127.0.0.1:{port}",
                               "--models", str(ROOT / "tests/data/models"),
                               "--auth-file", str(auth)], env=env)]
    for i in (1, 2):
        procs.append(subprocess.Popen([binary, "worker", "--coordinator", url,
                                       "--data", str(data / f"site-{i}"), "--name", f"py-site-{i}",
                                       "--policy", str(ROOT / "examples/site-policy.toml")],
                                      env=env))
    client_env = dict(os.environ, SHOAL_TOKEN=TOKEN)
    try:
        deadline = time.time() + 60
        while True:
            out = subprocess.run([binary, "sql", "--coordinator", url, "--format", "csv", "--quiet",
                                  "SELECT count(*) AS n FROM lineitem"],
                                 capture_output=True, text=True, env=client_env)
            if out.returncode == 0 and out.stdout == f"n\n{ROWS}\n":
                break
            if time.time() > deadline:
                raise RuntimeError(f"cluster did not come up: {out.stdout} {out.stderr}")
            time.sleep(0.3)
        yield Cluster(url, port)
    finally:
        for p in procs:
            p.kill()
            p.wait()
