//! The events of a running pipeline, sent to whoever runs it (a Flight client, the CLI).

use crate::error::{Error, Result};
use crate::protocol::PipelineEvent;
use crate::security::Principal;
use base64::Engine;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::writer::StreamWriter;
use tokio::sync::mpsc;

/// A batch as a `Rows` event carries it: one Arrow IPC stream, base64.
pub(super) fn encode_rows(batch: &RecordBatch) -> Result<String> {
    let mut buf = Vec::new();
    let mut writer = StreamWriter::try_new(&mut buf, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// Where a run's events go, and whose run it is (its statements are listed and cancelled
/// as that principal's).
pub(super) struct Events {
    sender: mpsc::Sender<PipelineEvent>,
    pub(super) principal: Principal,
}

impl Events {
    pub(super) fn new(sender: mpsc::Sender<PipelineEvent>, principal: Principal) -> Self {
        Self { sender, principal }
    }

    /// Sends; a caller that went away stops the run.
    pub(super) async fn send(&self, event: PipelineEvent) -> Result<()> {
        self.sender.send(event).await.map_err(|_| Error::ClientGone)
    }
}
