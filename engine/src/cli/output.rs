//! Printing results as a table, CSV or JSON lines.

use super::Format;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::pretty::pretty_format_batches;
use std::io::Write;

/// Whether `error` is stdout closed by its reader (a broken pipe): the output is no longer
/// wanted, so the command ends quietly.
pub fn is_closed_stdout(error: &anyhow::Error) -> bool {
    error.chain().any(|link| {
        let io = link
            .downcast_ref::<std::io::Error>()
            .or_else(|| match link.downcast_ref() {
                Some(ArrowError::IoError(_, e)) => Some(e),
                _ => None,
            });
        io.is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A heading between the demo's steps.
pub fn section(title: &str) {
    println!("\n== {title}");
}

/// Prints a result. Written with `write!`, never `println!`: a reader that closes the pipe
/// early (`shoal sql ... | head`) is an error [`is_closed_stdout`] recognises, not a panic.
pub fn print(schema: &SchemaRef, batches: &[RecordBatch], format: Format) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    match format {
        Format::Table => {
            let table = if batches.is_empty() {
                pretty_format_batches(&[RecordBatch::new_empty(schema.clone())])?
            } else {
                pretty_format_batches(batches)?
            };
            writeln!(stdout.lock(), "{table}")?;
        }
        // Each batch is formatted into memory and then written, so a closed stdout is an
        // I/O error of ours (the CSV writer would turn it into text).
        Format::Csv => {
            let mut out = stdout.lock();
            for (i, batch) in batches.iter().enumerate() {
                let mut buf = Vec::new();
                datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(i == 0)
                    .build(&mut buf)
                    .write(batch)?;
                out.write_all(&buf)?;
            }
            out.flush()?;
        }
        Format::Json => {
            let mut out = stdout.lock();
            for batch in batches {
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
                writer.write(batch)?;
                writer.finish()?;
                out.write_all(&writer.into_inner())?;
            }
            out.flush()?;
        }
    }
    Ok(())
}
