"""Flight SQL messages built and read by hand: pyarrow.flight has no Flight SQL client, and
the tests need to send exactly what a hostile client would (other clients' handles and
tickets, changed tickets)."""

SQL_TYPES = "type.googleapis.com/arrow.flight.protocol.sql."


def varint(n):
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def field(number, payload):
    """A length-delimited field (strings, bytes, messages)."""
    return bytes([number << 3 | 2]) + varint(len(payload)) + payload


def packed(type_name, message):
    """`message` in a protobuf Any, as Flight SQL commands and actions travel."""
    return field(1, (SQL_TYPES + type_name).encode()) + field(2, message)


def fields(data):
    """{field number: [values]} of a message: bytes for length-delimited, ints for varints."""
    out, i = {}, 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, i = read_varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 0:
            value, i = read_varint(data, i)
        else:
            raise ValueError(f"wire type {wire} not handled")
        out.setdefault(number, []).append(value)
    return out


def read_varint(data, i):
    shift = n = 0
    while True:
        byte = data[i]
        i += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, i


def statement_command(sql):
    """CommandStatementQuery: field 1 = the query."""
    return packed("CommandStatementQuery", field(1, sql.encode()))


def create_prepared(sql):
    """The body of the CreatePreparedStatement action."""
    return packed("ActionCreatePreparedStatementRequest", field(1, sql.encode()))


def prepared_handle(result_body):
    """The handle in a CreatePreparedStatement result (an Any around the result)."""
    result = fields(fields(result_body)[2][0])
    return result[1][0]


def prepared_query(handle):
    """CommandPreparedStatementQuery for GetFlightInfo."""
    return packed("CommandPreparedStatementQuery", field(1, handle))


def close_prepared(handle):
    return packed("ActionClosePreparedStatementRequest", field(1, handle))


def cancel_flight_info(info_bytes):
    """The body of the CancelFlightInfo action (a plain message, not an Any)."""
    return field(1, info_bytes)


CANCEL_STATUS = {0: "unspecified", 1: "cancelled", 2: "cancelling", 3: "not cancellable"}


def cancel_status(result_body):
    return CANCEL_STATUS[fields(result_body).get(1, [0])[0]]
