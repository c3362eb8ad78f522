//! Prepared statement parameters: received as Arrow batches (DoPut), carried in tickets as
//! Arrow IPC, bound by position to `$1`, `$2`, ...

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::{ParamValues, ScalarValue};
use futures::TryStreamExt;
use tonic::Status;

/// The one row of parameters a client bound.
pub async fn receive(stream: PeekableFlightDataStream) -> Result<RecordBatch, Status> {
    let batches: Vec<RecordBatch> =
        FlightRecordBatchStream::new_from_flight_data(stream.map_err(FlightError::from))
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("reading bound parameters: {e}")))?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    match (batches.into_iter().find(|b| b.num_rows() > 0), rows) {
        (Some(batch), 1) => Ok(batch),
        (_, n) => Err(Status::invalid_argument(format!(
            "bind exactly one row of parameters to a query (got {n}); run the statement once per row"
        ))),
    }
}

pub fn encode(row: &RecordBatch) -> Result<String, Status> {
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, &row.schema())
        .map_err(|e| Status::internal(e.to_string()))?;
    writer
        .write(row)
        .and_then(|()| writer.finish())
        .map_err(|e| Status::internal(e.to_string()))?;
    drop(writer);
    Ok(hex::encode(bytes))
}

/// The parameter values of a ticket, in position order.
pub fn decode(encoded: Option<&str>) -> Result<Option<ParamValues>, Status> {
    let Some(encoded) = encoded else {
        return Ok(None);
    };
    let bad = |m: String| Status::invalid_argument(format!("malformed parameters in ticket: {m}"));
    let bytes = hex::decode(encoded).map_err(|e| bad(e.to_string()))?;
    let mut reader =
        StreamReader::try_new(bytes.as_slice(), None).map_err(|e| bad(e.to_string()))?;
    let row = reader
        .next()
        .transpose()
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("no row".into()))?;
    let values = row
        .columns()
        .iter()
        .map(|column| ScalarValue::try_from_array(column, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    Ok(Some(ParamValues::from(values)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn parameters_survive_the_ticket() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Float64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let row = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float64Array::from(vec![2.5])),
                Arc::new(StringArray::from(vec!["R"])),
            ],
        )
        .unwrap();
        let decoded = decode(Some(&encode(&row).unwrap())).unwrap().unwrap();
        let ParamValues::List(values) = decoded else {
            panic!("positional parameters expected")
        };
        assert_eq!(values.len(), 2);
        assert!(decode(Some("zz")).is_err());
    }
}
