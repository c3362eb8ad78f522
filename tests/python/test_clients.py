"""Real clients from Python against a shoal cluster of separate processes: the ADBC
Flight SQL driver (through its DB-API) and pyarrow.flight, with authentication."""

import threading
import time

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import PASSWORD, ROWS, TOKEN, USER
from flightsql_wire import statement_command

FEATURES = "l_quantity, l_extendedprice, l_discount, l_tax"
AUTH = adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value


def connect(cluster, token=TOKEN):
    kwargs = {AUTH: f"Bearer {token}"} if token else {}
    return flightsql.connect(cluster.url, db_kwargs=kwargs, autocommit=True)


def scalar(cur, sql, parameters=None):
    cur.execute(sql, parameters)
    return cur.fetchall()


def test_adbc_runs_a_predict_aggregate(cluster):
    with connect(cluster) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT l_returnflag, count(*) AS n, "
            f"avg(predict_proba('return_risk', {FEATURES})) AS risk "
            "FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag"
        )
        table = cur.fetch_arrow_table()
    assert table.column_names == ["l_returnflag", "n", "risk"]
    assert table.num_rows == 3
    assert sum(table.column("n").to_pylist()) == ROWS
    assert all(0.0 <= r <= 1.0 for r in table.column("risk").to_pylist())


def test_adbc_logs_in_with_user_and_password(cluster):
    kwargs = {"username": USER, "password": PASSWORD}
    with flightsql.connect(cluster.url, db_kwargs=kwargs, autocommit=True) as conn, conn.cursor() as cur:
        assert scalar(cur, "SELECT count(*) FROM lineitem") == [(ROWS,)]


@pytest.mark.parametrize("token", [None, "wrong-token-wrong-token"])
def test_missing_or_wrong_credentials_are_refused(cluster, token):
    with pytest.raises(Exception) as error:
        with connect(cluster, token) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "UNAUTHENTICATED" in str(error.value) or "Unauthenticated" in str(error.value)
    with pytest.raises(Exception):
        kwargs = {"username": USER, "password": "not-the-password"}
        with flightsql.connect(cluster.url, db_kwargs=kwargs, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")


def test_adbc_prepared_statements_bind_parameters(cluster):
    with connect(cluster) as conn, conn.cursor() as cur:
        literal = scalar(cur, "SELECT count(*), sum(predict('return_risk', " + FEATURES + ")) "
                              "FROM lineitem WHERE l_quantity < 20.5 AND l_returnflag = 'R'")
        sql = ("SELECT count(*), sum(predict('return_risk', " + FEATURES + ")) "
               "FROM lineitem WHERE l_quantity < ? AND l_returnflag = ?")
        assert scalar(cur, sql, (20.5, "R")) == literal
        # The same statement again with other values.
        other = scalar(cur, sql, (51.0, "N"))
        assert other != literal and other[0][0] > 0


def test_adbc_catalog_calls(cluster):
    with connect(cluster) as conn:
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        catalogs = {c["catalog_name"]: c for c in objects}
        assert "shoal_cluster" in catalogs
        schemas = {s["db_schema_name"]: s for s in catalogs["shoal_cluster"]["catalog_db_schemas"]}
        tables = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
        assert "lineitem" in tables
        columns = [c["column_name"] for c in tables["lineitem"]["table_columns"]]
        assert "l_extendedprice" in columns
        models = {t["table_name"] for t in schemas["shoal"]["db_schema_tables"]}
        assert "models" in models

        schema = conn.adbc_get_table_schema("lineitem", catalog_filter="shoal_cluster",
                                            db_schema_filter="public")
        assert schema.field("l_quantity").type == pa.decimal128(15, 2)
        assert set(conn.adbc_get_table_types()) == {"TABLE", "VIEW"}
        info = conn.adbc_get_info()  # from GetSqlInfo
        assert info["vendor_name"] == "shoal", info
        assert info["vendor_version"], info
    with connect(cluster) as conn, conn.cursor() as cur:
        cur.execute("SHOW MODELS")
        names = cur.fetch_arrow_table().column("name").to_pylist()
    assert "return_risk" in names and "heavy_scorer" in names


def test_adbc_streams_a_million_row_result_in_batches(cluster):
    with connect(cluster) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        cur.execute("SELECT l_orderkey, l_linenumber, "
                    f"predict_proba('return_risk', {FEATURES}) AS risk FROM lineitem")
        reader = cur.fetch_record_batch()
        rows, batches, first = 0, 0, None
        for batch in reader:
            if first is None:
                first = time.perf_counter() - started
            rows += batch.num_rows
            batches += 1
        total = time.perf_counter() - started
    assert rows == ROWS
    assert batches > 10
    print(f"\n{rows} rows in {batches} batches: first batch after {first * 1000:.0f} ms, "
          f"{rows / total:,.0f} rows/s")


def model_runs(cluster):
    return sum(site["model_runs"] for site in cluster.action("shoal.sites"))


def wait_until_idle(cluster, timeout=30):
    """Model runs on the workers stop increasing (they report them in each heartbeat)."""
    deadline = time.time() + timeout
    last = model_runs(cluster)
    while True:
        time.sleep(2.5)
        now = model_runs(cluster)
        if now == last:
            return now
        assert time.time() < deadline, "scoring work did not stop"
        last = now


HEAVY = f"SELECT sum(predict('heavy_scorer', {FEATURES})) FROM lineitem"


def test_adbc_cancel_stops_the_query_on_the_workers(cluster):
    before = wait_until_idle(cluster)
    with connect(cluster) as conn, conn.cursor() as cur:
        error = []

        def run():
            try:
                cur.execute(HEAVY)
                cur.fetchall()
            except Exception as e:  # the cancelled statement raises
                error.append(e)

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.time() + 30
        while model_runs(cluster) == before:
            assert time.time() < deadline, "the heavy query did not start"
            time.sleep(0.2)
        cur.adbc_cancel()
        worker.join(timeout=30)
        assert not worker.is_alive(), "cancel did not end the statement"
    assert error, "the statement should have failed as cancelled"
    after = wait_until_idle(cluster)
    # Each worker finishes at most the batches already handed to its model sessions; the
    # whole query would need about 150 (1.2M rows / 8192).
    assert after - before < 40, after - before
    assert cluster.action("shoal.running") == []


def test_pyarrow_flight_disconnect_stops_the_query(cluster):
    before = wait_until_idle(cluster)
    client, options = cluster.flight_client()
    info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(HEAVY)),
                                  options)
    reader = client.do_get(info.endpoints[0].ticket, options)
    deadline = time.time() + 30
    while model_runs(cluster) == before:
        assert time.time() < deadline, "the heavy query did not start"
        time.sleep(0.2)
    reader.cancel()
    client.close()
    after = wait_until_idle(cluster)
    assert after - before < 40, after - before
    assert cluster.action("shoal.running") == []


@pytest.mark.parametrize("sql", [
    "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
    "COPY (SELECT 1) TO '/tmp/shoal-python-should-not-exist.csv'",
    "SET datafusion.execution.batch_size = 1",
    "SELECT * FROM '/etc/passwd'",
])
def test_adbc_refuses_statements_that_read_files_or_change_state(cluster, sql):
    with connect(cluster) as conn, conn.cursor() as cur:
        with pytest.raises(Exception) as error:
            cur.execute(sql)
            cur.fetchall()
        message = str(error.value)
        assert "INVALID_ARGUMENT" in message, message
        assert any(m in message for m in ("not supported", "not found")), message


def test_pyarrow_flight_basic_login_and_sites(cluster):
    client = flight.FlightClient(cluster.url)
    header = client.authenticate_basic_token(USER, PASSWORD)
    options = flight.FlightCallOptions(headers=[header])
    results = list(client.do_action(flight.Action("shoal.sites", b""), options))
    import json
    sites = json.loads(b"".join(r.body.to_pybytes() for r in results))
    assert sorted(s["name"] for s in sites) == ["py-site-1", "py-site-2"]
    assert all(s["live"] for s in sites)
    with pytest.raises(flight.FlightUnauthenticatedError):
        list(flight.FlightClient(cluster.url).do_action(flight.Action("shoal.sites", b"")))


def test_the_python_example_runs(cluster):
    import os
    import pathlib
    import subprocess
    import sys
    example = pathlib.Path(__file__).resolve().parents[2] / "examples/python/adbc_predict.py"
    out = subprocess.run([sys.executable, str(example), cluster.url], capture_output=True,
                         text=True, env=dict(os.environ, SHOAL_TOKEN=TOKEN), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "avg_return_risk" in out.stdout and "orders" in out.stdout, out.stdout


@pytest.mark.skipif(
    any(p.name[len("nvidia"):].isdigit() for p in __import__("pathlib").Path("/dev").glob("nvidia*")),
    reason="the machine has a GPU",
)
def test_adbc_asks_for_a_device_through_a_call_header(cluster):
    """`shoal-device: cuda` on a cluster without GPUs: refused as FAILED_PRECONDITION naming
    why; with `shoal-device-fallback: true` the same answer as on the CPU."""
    header = adbc_driver_flightsql.DatabaseOptions.RPC_CALL_HEADER_PREFIX.value
    sql = (
        "SELECT l_returnflag, round(sum(predict_proba('return_risk', "
        f"{FEATURES})), 3) AS risk FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag"
    )

    def run(**headers):
        kwargs = {AUTH: f"Bearer {TOKEN}"}
        kwargs.update({header + name: value for name, value in headers.items()})
        with flightsql.connect(cluster.url, db_kwargs=kwargs, autocommit=True) as conn, conn.cursor() as cur:
            return scalar(cur, sql)

    on_cpu = run(**{"shoal-device": "cpu"})
    with pytest.raises(Exception) as error:
        run(**{"shoal-device": "cuda"})
    message = str(error.value)
    assert "cannot score on cuda" in message and "no NVIDIA GPU" in message, message
    assert "FAILED_PRECONDITION" in message or "FailedPrecondition" in message, message
    assert run(**{"shoal-device": "cuda", "shoal-device-fallback": "true"}) == on_cpu
