"""The deployment files, checked offline: the Kubernetes manifests against the Kubernetes
schemas (kubernetes-validate, from PyPI, with its bundled schemas; strict: an unknown field
fails), every `shoal` flag the manifests and the Dockerfile pass is one the binary has, and
the health endpoints the probes call answer as the manifests expect.
"""

import pathlib
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

from conftest import ROOT, free_port, shoal_bin

MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
VALIDATOR = pathlib.Path(sys.executable).parent / "kubernetes-validate"


def validate(paths):
    return subprocess.run(
        [str(VALIDATOR), "--strict", "--quiet", *map(str, paths)],
        capture_output=True,
        text=True,
    )


def test_the_manifests_are_valid_kubernetes_objects():
    assert MANIFESTS, "no manifests under deploy/kubernetes"
    result = validate(MANIFESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_refuses_a_broken_manifest(tmp_path):
    # The check above could not pass a manifest with a misspelt field.
    broken = tmp_path / "broken.yaml"
    text = (ROOT / "deploy" / "kubernetes" / "sites.yaml").read_text()
    broken.write_text(text.replace("livenessProbe:", "livenesProbe:", 1))
    assert validate([broken]).returncode != 0


def containers():
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []):
                yield path.name, container


def help_of(subcommand):
    return subprocess.run(
        [shoal_bin(), subcommand, "--help"], capture_output=True, text=True, check=True
    ).stdout


def test_every_flag_the_manifests_pass_exists():
    checked = 0
    for name, container in containers():
        args = container["args"]
        flags = {a.split("=", 1)[0] for a in args[1:] if a.startswith("--")}
        helptext = help_of(args[0])
        for flag in flags:
            assert re.search(rf"{re.escape(flag)}\b", helptext), f"{name}: shoal {args[0]} has no {flag}"
            checked += 1
        ports = {p["name"] for p in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, f"{name}: {probe}"
    assert checked > 20


def test_the_dockerfile_runs_as_non_root_with_onnxruntime():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", text, re.M)
    assert "ORT_DYLIB_PATH=" in text
    assert text.count("FROM ") >= 3, "multi-stage"


def wait_until(condition, seconds):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"not true after {seconds} s"
        time.sleep(0.1)


def status(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def test_the_probes_endpoints_answer(tmp_path):
    health = free_port()
    coordinator = subprocess.Popen(
        [shoal_bin(), "coordinator", "--listen", f"127.0.0.1:{free_port()}",
         "--health-listen", f"127.0.0.1:{health}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: status(f"http://127.0.0.1:{health}/readyz") == 200, 30)
        assert status(f"http://127.0.0.1:{health}/healthz") == 200
        assert status(f"http://127.0.0.1:{health}/metrics") == 404
    finally:
        coordinator.terminate()
        coordinator.wait(timeout=30)
