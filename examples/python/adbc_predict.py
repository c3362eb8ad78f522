"""Score TPC-H lineitem on a shoal cluster from Python with ADBC (Flight SQL).

Start a cluster first:   make demo ARGS=--serve       (serves grpc://127.0.0.1:50050)
Then run:                .venv/bin/python examples/python/adbc_predict.py [URL]

A coordinator that requires authentication takes a bearer token from SHOAL_TOKEN.
"""

import os
import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql

url = sys.argv[1] if len(sys.argv) > 1 else "grpc://127.0.0.1:50050"
options = {}
if os.environ.get("SHOAL_TOKEN"):
    header = adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value
    options[header] = f"Bearer {os.environ['SHOAL_TOKEN']}"

# shoal has no transactions: autocommit=True says so, instead of ADBC warning about it.
with flightsql.connect(url, db_kwargs=options, autocommit=True) as conn, conn.cursor() as cur:
    # The model runs on the workers that hold the data; only the aggregates come back.
    cur.execute(
        """SELECT l_returnflag,
                  count(*) AS orders,
                  avg(predict_proba('return_risk', l_quantity, l_extendedprice, l_discount, l_tax))
                      AS avg_return_risk
           FROM lineitem
           WHERE l_shipdate >= ?
           GROUP BY l_returnflag
           ORDER BY l_returnflag""",
        ("1995-01-01",),
    )
    print(cur.fetch_arrow_table())
