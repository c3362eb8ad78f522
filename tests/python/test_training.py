"""Federated training checked from outside: a cluster of separate processes (coordinator and
three workers, each holding only its own site's rows) trains over Flight SQL; the models it
registers load in onnxruntime's Python package, and match scikit-learn trained centrally on
all the rows (the answer a data team would get if the data could be pooled).
"""

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import time

import adbc_driver_flightsql.dbapi as flightsql
import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from conftest import ROOT, free_port, shoal_bin

SITES = 3
ROWS_PER_SITE = 20_000
FEATURES = ["x1", "x2", "x3", "x4"]
TRUE_W = np.array([1.2, -0.8, 0.5, 0.0])
TRUE_B = -0.3


def make_site(rng, site):
    """One site's rows: features drawn from a site-specific (shifted) distribution."""
    shift = np.array([0.4, -0.3, 0.2, 0.1]) * site
    x = rng.normal(size=(ROWS_PER_SITE, 4)) * np.array([1.0, 2.0, 0.5, 3.0]) + shift
    p = 1 / (1 + np.exp(-(x @ TRUE_W + TRUE_B)))
    y = (rng.uniform(size=ROWS_PER_SITE) < p).astype(np.int64)
    t = 3.0 + x @ np.array([2.0, -1.0, 0.5, 0.25]) + rng.normal(scale=0.5, size=ROWS_PER_SITE)
    return x, y, t


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("federation")
    rng = np.random.default_rng(7)
    xs, ys, ts = [], [], []
    for site in range(SITES):
        x, y, t = make_site(rng, site)
        xs.append(x), ys.append(y), ts.append(t)
        table = root / f"site-{site + 1}" / "patients"
        table.mkdir(parents=True)
        columns = {name: x[:, i] for i, name in enumerate(FEATURES)}
        columns.update(y=y, t=t)
        pq.write_table(pa.table(columns), table / "part-1.parquet")
    models = root / "models"
    models.mkdir()
    with processes(root, models) as url:
        yield url, models, np.vstack(xs), np.concatenate(ys), np.concatenate(ts)


@contextlib.contextmanager
def processes(root, models):
    binary = shoal_bin()
    env = dict(os.environ, SHOAL_CLUSTER_SECRET="python-training-secret-0123456789")
    env.pop("SHOAL_TOKENS", None)
    port = free_port()
    url = f"grpc://127.0.0.1:{port}"
    procs = [subprocess.Popen([binary, "coordinator", "--listen", f"127.0.0.1:{port}",
                               "--models", str(models)], env=env)]
    for site in range(SITES):
        procs.append(subprocess.Popen([binary, "worker", "--coordinator", url, "--name",
                                       f"site-{site + 1}", "--data", str(root / f"site-{site + 1}")],
                                      env=env))
    try:
        deadline = time.time() + 60
        while True:
            try:
                if query(url, "SELECT count(*) AS n FROM patients")["n"][0].as_py() == SITES * ROWS_PER_SITE:
                    break
            except Exception:  # not up yet
                pass
            if time.time() > deadline:
                raise RuntimeError("the cluster did not come up")
            time.sleep(0.3)
        yield url
    finally:
        for p in procs:
            p.kill()
            p.wait()


def query(url, sql):
    with flightsql.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def onnx_proba(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    label, proba = session.run(None, {"features": x.astype(np.float32)})
    return label, proba[:, 1]


def test_federated_logistic_regression_matches_scikit_learn_trained_centrally(federation):
    url, models, x, y, _ = federation
    columns = ", ".join(FEATURES)
    steps = query(url, f"CREATE MODEL fed_logistic OPTIONS (rounds = 20, learning_rate = 0.5) "
                       f"AS TRAIN logistic PREDICTING y FROM (SELECT {columns}, y FROM patients)")
    assert steps.num_rows == 1 + 20 + 1

    label, p_fed = onnx_proba(models / "fed_logistic.onnx", x)
    central = LogisticRegression(C=1e6, max_iter=2000).fit(x, y)
    p_central = central.predict_proba(x)[:, 1]
    acc_fed, acc_central = accuracy_score(y, label), accuracy_score(y, central.predict(x))
    loss_fed, loss_central = log_loss(y, p_fed), log_loss(y, p_central)
    auc_fed, auc_central = roc_auc_score(y, p_fed), roc_auc_score(y, p_central)
    print(f"FIGURE logistic federated vs central: accuracy {acc_fed:.4f} vs {acc_central:.4f}, "
          f"log loss {loss_fed:.4f} vs {loss_central:.4f}, AUC {auc_fed:.4f} vs {auc_central:.4f}")
    assert abs(acc_fed - acc_central) < 0.01
    assert abs(loss_fed - loss_central) / loss_central < 0.01
    assert abs(auc_fed - auc_central) < 0.01

    # The cluster's own metric over the same rows agrees with scikit-learn's.
    auc_sql = query(url, f"SELECT evaluate('auc', predict_proba('fed_logistic', {columns}), y) AS auc "
                         f"FROM patients")["auc"][0].as_py()
    bound = query(url, f"SELECT evaluate('auc_error_bound', predict_proba('fed_logistic', {columns}), y) "
                       f"AS b FROM patients")["b"][0].as_py()
    assert abs(auc_sql - auc_fed) <= bound + 1e-6

    # The training report rides in the model: rounds, rows per site, bytes per site per round.
    meta = {p.key: p.value for p in onnx.load(str(models / "fed_logistic.onnx")).metadata_props}
    report = json.loads(meta["shoal.training"])
    assert report["rows_per_site"] == {f"site-{i + 1}": ROWS_PER_SITE for i in range(SITES)}
    rounds = report["trials"][0]["rounds"]
    assert len(rounds) == 20
    for r in rounds:
        for site, s in r["summary"]["sites"].items():
            # One partition per site: 5 weights and counts, whatever the 20,000 rows.
            assert 0 < s["bytes_sent"] < 256, (site, s)
    print(f"FIGURE bytes per site per round: {rounds[0]['summary']['sites']['site-1']['bytes_sent']} "
          f"(rows per site {ROWS_PER_SITE}); network bytes per round {rounds[0]['network_bytes']}")


def test_federated_linear_regression_equals_the_central_least_squares(federation):
    url, models, x, _, t = federation
    columns = ", ".join(FEATURES)
    query(url, f"CREATE MODEL fed_linear AS TRAIN linear PREDICTING t FROM (SELECT {columns}, t FROM patients)")
    session = ort.InferenceSession(str(models / "fed_linear.onnx"), providers=["CPUExecutionProvider"])
    (predicted,) = session.run(None, {"features": x.astype(np.float32)})
    central = LinearRegression().fit(x, t).predict(x)
    worst = np.max(np.abs(predicted[:, 0] - central))
    print(f"FIGURE linear federated vs central: largest prediction difference {worst:.2e}")
    assert worst < 1e-3 * np.max(np.abs(central))
    # Versions: retraining registers v2 and `fed_linear` now means it.
    query(url, f"CREATE MODEL fed_linear AS TRAIN linear PREDICTING t FROM (SELECT x1, t FROM patients)")
    names = set(query(url, "SELECT name FROM shoal.models")["name"].to_pylist())
    assert {"fed_linear", "fed_linear@v1", "fed_linear@v2"} <= names
    # The sites run without --policy: patients are aggregates-only, so the new version is
    # used in an aggregate (its rows may not leave).
    mean = query(url, "SELECT count(*) AS n, avg(predict('fed_linear', x1)) AS p FROM patients")
    assert mean["n"][0].as_py() == SITES * ROWS_PER_SITE and mean["p"][0].as_py() is not None
