"""Client-side figures of the Flight SQL front door: time to first batch and rows/s of a
result of over a million rows read through ADBC, median of 3 runs (min-max).

    make bench-client          # starts its own cluster (shoal binary of the ci profile)
    .venv/bin/python benches/flight_sql_client.py grpc://host:port   # an existing cluster

Without a URL it starts a coordinator and two workers over TPC-H lineitem at scale 0.2
(1,199,969 rows) with the test fixture of tests/python.
"""

import pathlib
import statistics
import sys
import time

import adbc_driver_flightsql.dbapi as flightsql

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "python"))

FEATURES = "l_quantity, l_extendedprice, l_discount, l_tax"
QUERIES = {
    "columns only": "SELECT l_orderkey, l_linenumber, l_extendedprice FROM lineitem",
    "with predict_proba": "SELECT l_orderkey, l_linenumber, "
                          f"predict_proba('return_risk', {FEATURES}) AS risk FROM lineitem",
}


def measure(url, db_kwargs, sql):
    with flightsql.connect(url, db_kwargs=db_kwargs, autocommit=True) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        cur.execute(sql)
        first, rows = None, 0
        for batch in cur.fetch_record_batch():
            if first is None:
                first = time.perf_counter() - started
            rows += batch.num_rows
        return rows, first, time.perf_counter() - started


def report(url, db_kwargs):
    print(f"{'query':<22} {'rows':>10} {'first batch ms':>22} {'rows/s':>26}")
    for name, sql in QUERIES.items():
        runs = [measure(url, db_kwargs, sql) for _ in range(3)]
        rows = runs[0][0]
        firsts = sorted(r[1] * 1000 for r in runs)
        rates = sorted(rows / r[2] for r in runs)
        print(f"{name:<22} {rows:>10} {statistics.median(firsts):>8.0f} ({firsts[0]:.0f}-{firsts[-1]:.0f})"
              f" {statistics.median(rates):>14,.0f} ({rates[0]:,.0f}-{rates[-1]:,.0f})")


def main():
    if len(sys.argv) > 1:
        report(sys.argv[1], {})
        return
    import tempfile

    import conftest
    from adbc_driver_flightsql import DatabaseOptions
    with conftest.running_cluster(pathlib.Path(tempfile.mkdtemp())) as cluster:
        report(cluster.url, {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {conftest.TOKEN}"})


if __name__ == "__main__":
    main()
