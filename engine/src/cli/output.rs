//! Printing results as a table, CSV or JSON lines.

use super::Format;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::pretty::pretty_format_batches;

/// A heading between the demo's steps.
pub fn section(title: &str) {
    println!("\n== {title}");
}

pub fn print(schema: &SchemaRef, batches: &[RecordBatch], format: Format) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    match format {
        Format::Table => {
            if batches.is_empty() {
                let empty = RecordBatch::new_empty(schema.clone());
                println!("{}", pretty_format_batches(&[empty])?);
            } else {
                println!("{}", pretty_format_batches(batches)?);
            }
        }
        Format::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(stdout.lock());
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::Json => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(stdout.lock());
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}
