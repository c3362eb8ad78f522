"""Clients are separated: a client sees, cancels, fetches and reads only its own statements,
prepared statements and reports (an admin sees all); tickets are signed; quotas stop one
client from filling the coordinator's tables for everyone. Against the processes of the
shared cluster, as a hostile authenticated client would try it."""

import base64
import json
import pathlib
import subprocess
import sys
import time

import pyarrow.flight as flight
import pytest

from conftest import (ADMIN, ADMIN_PASSWORD, ANALYST, ANALYST_PASSWORD, PASSWORD, RIVAL,
                      RIVAL_PASSWORD, USER)
from flightsql_wire import (cancel_flight_info, cancel_status, close_prepared, create_prepared,
                            prepared_handle, prepared_query, statement_command)

HEAVY = ("SELECT sum(predict('heavy_scorer', l_quantity, l_extendedprice, l_discount, l_tax)) "
         "FROM lineitem")


def info_of(client, options, sql):
    return client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)),
                                  options)


def action(client, options, name, body=b""):
    return [r.body.to_pybytes() for r in client.do_action(flight.Action(name, body), options)]


def running(cluster, who):
    return cluster.action("shoal.running", as_client=who)


# The owner's fetch runs in a process of its own: pyarrow turns a statement cancelled by
# the server into a KeyboardInterrupt of the fetching process's main thread.
OWNER_FETCH = """
import base64, sys, pyarrow.flight as flight
from flightsql_wire import statement_command
client = flight.FlightClient(sys.argv[1])
options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(sys.argv[2], sys.argv[3])])
info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sys.argv[4])), options)
print(base64.b64encode(info.serialize()).decode(), flush=True)
try:
    client.do_get(info.endpoints[0].ticket, options).read_all()
    print("finished", flush=True)
except BaseException as e:
    print("failed:", type(e).__name__, e, flush=True)
"""


def test_a_client_cannot_see_cancel_or_fetch_anothers_statement(cluster):
    owner = cluster.login(USER, PASSWORD)
    rival = cluster.login(RIVAL, RIVAL_PASSWORD)
    admin = cluster.login(ADMIN, ADMIN_PASSWORD)
    fetch = subprocess.Popen(
        [sys.executable, "-c", OWNER_FETCH, cluster.url, USER, PASSWORD, HEAVY],
        stdout=subprocess.PIPE, text=True, cwd=pathlib.Path(__file__).parent)
    try:
        info = flight.FlightInfo.deserialize(base64.b64decode(fetch.stdout.readline()))
        ticket = info.endpoints[0].ticket
        deadline = time.time() + 30
        while not running(cluster, owner):
            assert time.time() < deadline, "the heavy statement did not start"
            time.sleep(0.1)
        (query_id,) = running(cluster, owner)
        assert running(cluster, rival) == [], "a rival sees another's statement"
        assert running(cluster, admin) == [query_id]
        # The rival brings the owner's FlightInfo to CancelFlightInfo: nothing is cancelled.
        (reply,) = action(*rival, "CancelFlightInfo", cancel_flight_info(info.serialize()))
        assert cancel_status(reply) == "not cancellable"
        assert running(cluster, owner) == [query_id]
        # ... and the owner's ticket to DoGet: refused.
        with pytest.raises(flight.FlightUnauthorizedError, match="another client"):
            rival[0].do_get(ticket, rival[1]).read_all()
        # A changed ticket (the owner's id, another statement) is refused for anyone.
        forged = flight.Ticket(ticket.ticket.replace(b"sum(predict", b"max(predict"))
        with pytest.raises(flight.FlightUnauthorizedError, match="not issued"):
            owner[0].do_get(forged, owner[1]).read_all()
        # The admin may cancel it.
        (reply,) = action(*admin, "CancelFlightInfo", cancel_flight_info(info.serialize()))
        assert cancel_status(reply) == "cancelled"
        outcome = fetch.stdout.readline()
        # (pyarrow reports a statement the server cancelled as a KeyboardInterrupt.)
        assert outcome.startswith("failed:"), outcome
    finally:
        fetch.kill()
        fetch.wait()
    assert running(cluster, admin) == []


def test_reports_are_their_owners(cluster):
    owner = cluster.login(USER, PASSWORD)
    rival = cluster.login(RIVAL, RIVAL_PASSWORD)
    info = info_of(*owner, "SELECT count(*) FROM lineitem")
    ticket = info.endpoints[0].ticket
    assert owner[0].do_get(ticket, owner[1]).read_all().num_rows == 1
    handle = json.loads(ticket.ticket[ticket.ticket.index(b"{"):])
    body = json.dumps({"query_id": handle["query_id"]}).encode()
    deadline = time.time() + 10
    while True:
        try:
            report = json.loads(action(*owner, "shoal.query_report", body)[0])
            break
        except flight.FlightError:
            assert time.time() < deadline, "the owner's report never came"
            time.sleep(0.2)
    assert report["rows_returned"] == 1, report
    with pytest.raises(KeyError, match="no report of yours"):
        action(*rival, "shoal.query_report", body)


def test_prepared_statements_are_private_and_bounded_per_client(cluster):
    owner = cluster.login(USER, PASSWORD)
    rival = cluster.login(RIVAL, RIVAL_PASSWORD)
    (reply,) = action(*owner, "CreatePreparedStatement", create_prepared("SELECT 1 AS one"))
    handle = prepared_handle(reply)
    assert len(handle) > 30, handle
    descriptor = flight.FlightDescriptor.for_command(prepared_query(handle))
    with pytest.raises(KeyError, match="not open"):  # NOT_FOUND, as pyarrow raises it
        rival[0].get_flight_info(descriptor, rival[1])
    action(*rival, "ClosePreparedStatement", close_prepared(handle))
    info = owner[0].get_flight_info(descriptor, owner[1])
    assert owner[0].do_get(info.endpoints[0].ticket, owner[1]).read_all().num_rows == 1
    # The rival fills its own quota; the owner can still prepare.
    refused = None
    for i in range(300):
        try:
            action(*rival, "CreatePreparedStatement", create_prepared(f"SELECT {i}"))
        except Exception as e:  # RESOURCE_EXHAUSTED (pyarrow raises it as ArrowInvalid)
            refused = (i, str(e))
            break
    assert refused and refused[0] == 256 and "quota" in refused[1], refused
    action(*owner, "CreatePreparedStatement", create_prepared("SELECT 2"))


def test_a_client_looping_on_logins_ends_only_its_own_sessions(cluster):
    first = cluster.login(RIVAL, RIVAL_PASSWORD)
    action(*first, "shoal.sites")
    for _ in range(100):
        cluster.login(RIVAL, RIVAL_PASSWORD)
    with pytest.raises(flight.FlightUnauthenticatedError):
        action(*first, "shoal.sites")
    latest = cluster.login(RIVAL, RIVAL_PASSWORD)
    action(*latest, "shoal.sites")
    action(*cluster.login(USER, PASSWORD), "shoal.sites")


def test_a_shipped_model_cannot_be_trained_over_without_the_admin_role(cluster):
    import hashlib
    from conftest import ROOT
    shipped = ROOT / "tests/data/models/return_risk.onnx"
    before = hashlib.sha256(shipped.read_bytes()).hexdigest()
    rival = cluster.login(RIVAL, RIVAL_PASSWORD)
    sql = ("CREATE MODEL return_risk AS TRAIN linear PREDICTING l_tax "
           "FROM (SELECT l_quantity, l_tax FROM lineitem)")
    with pytest.raises(flight.FlightUnauthorizedError, match="shipped by the operator"):
        info_of(*rival, sql)
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == before
    assert not (ROOT / "tests/data/models/return_risk@v1.onnx").exists()


def test_an_analyst_queries_but_does_not_train(cluster):
    analyst = cluster.login(ANALYST, ANALYST_PASSWORD)
    info = info_of(*analyst, "SELECT count(*) AS n FROM lineitem")
    assert info.endpoints
    sql = ("CREATE MODEL analyst_model AS TRAIN linear PREDICTING l_tax "
           "FROM (SELECT l_quantity, l_tax FROM lineitem)")
    with pytest.raises(flight.FlightUnauthorizedError, match="analyst role"):
        info_of(*analyst, sql)
