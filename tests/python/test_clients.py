"""Real clients from Python against a shoal cluster of separate processes:
the ADBC Flight SQL driver (through its DB-API) and pyarrow.flight."""

import json

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight

FEATURES = "l_quantity, l_extendedprice, l_discount, l_tax"


def test_adbc_runs_a_predict_aggregate(cluster):
    with flightsql.connect(cluster) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT l_returnflag, count(*) AS n, "
            f"avg(predict_proba('return_risk', {FEATURES})) AS risk "
            "FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag"
        )
        table = cur.fetch_arrow_table()
    assert table.column_names == ["l_returnflag", "n", "risk"]
    assert table.num_rows == 3
    assert sum(table.column("n").to_pylist()) == 30201
    assert all(0.0 <= r <= 1.0 for r in table.column("risk").to_pylist())


def test_adbc_reads_row_level_predictions_with_their_types(cluster):
    with flightsql.connect(cluster) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT l_orderkey, predict('return_risk', " + FEATURES + ") AS label, "
            "predict_proba('ship_mode', l_quantity, l_discount, l_tax) AS modes "
            "FROM lineitem WHERE l_orderkey < 10 ORDER BY l_orderkey, l_linenumber"
        )
        table = cur.fetch_arrow_table()
    assert table.schema.field("label").type == pa.int64()
    assert table.schema.field("modes").type == pa.list_(pa.field("item", pa.float32(), False), 3)
    for probs in table.column("modes").to_pylist():
        assert abs(sum(probs) - 1.0) < 1e-5


def test_adbc_reports_bad_model_clearly(cluster):
    with flightsql.connect(cluster) as conn, conn.cursor() as cur:
        try:
            cur.execute("SELECT predict('nope', l_quantity) FROM lineitem")
            cur.fetch_arrow_table()
        except Exception as e:  # the driver raises its own DB-API error class
            assert "unknown model 'nope'" in str(e)
        else:
            raise AssertionError("expected an error")


def test_pyarrow_flight_lists_the_sites(cluster):
    client = flight.FlightClient(cluster)
    results = list(client.do_action(flight.Action("shoal.sites", b"")))
    sites = json.loads(b"".join(r.body.to_pybytes() for r in results))
    assert sorted(s["name"] for s in sites) == ["py-site-1", "py-site-2"]
    assert all(s["live"] for s in sites)
