"""A shoal cluster of separate processes for the Python client tests.

Uses the binary built by `make test-python` (target/ci/shoal, or SHOAL_BIN) and generates
its data with `shoal demo`'s generator through a tiny demo run (scale 0.005, 2 sites).
"""

import os
import pathlib
import socket
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def shoal_bin():
    if os.environ.get("SHOAL_BIN"):
        return os.environ["SHOAL_BIN"]
    for profile in ("ci", "debug"):
        candidate = ROOT / "target" / profile / "shoal"
        if candidate.exists():
            return str(candidate)
    raise RuntimeError("build shoal first: cargo build --bin shoal --profile ci")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    binary = shoal_bin()
    data = tmp_path_factory.mktemp("data")
    # `shoal demo` generates the data and exits; reuse its folders for real processes.
    subprocess.run([binary, "demo", "--scale", "0.005", "--workers", "2", "--data", str(data)],
                   check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    port = free_port()
    url = f"grpc://127.0.0.1:{port}"
    procs = [subprocess.Popen([binary, "coordinator", "--listen", f"127.0.0.1:{port}",
                               "--models", str(ROOT / "tests/data/models")])]
    for i in (1, 2):
        procs.append(subprocess.Popen([binary, "worker", "--coordinator", f"http://127.0.0.1:{port}",
                                       "--data", str(data / f"site-{i}"), "--name", f"py-site-{i}"]))
    try:
        deadline = time.time() + 60
        while True:
            out = subprocess.run([binary, "sql", "--coordinator", f"http://127.0.0.1:{port}",
                                  "--format", "csv", "--quiet",
                                  "SELECT count(*) AS n FROM lineitem"],
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout == "n\n30201\n":
                break
            if time.time() > deadline:
                raise RuntimeError(f"cluster did not come up: {out.stdout} {out.stderr}")
            time.sleep(0.3)
        yield url
    finally:
        for p in procs:
            p.kill()
            p.wait()
