//! A site's audit log: one JSON line per statement part the site ran or refused, in files
//! only its operator can read (`DIR/.shoal-audit/audit.jsonl` by default, 0600 in a 0700
//! folder). Lines are only ever appended; past [`ROTATE_BYTES`] the file is renamed to
//! `audit-<ms since epoch>.jsonl` and a new one started, so nothing is lost. `shoal audit
//! --data DIR` reads them all back into a summary.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Size past which the current file is rotated.
pub const ROTATE_BYTES: u64 = 64 * 1024 * 1024;

const CURRENT: &str = "audit.jsonl";

/// The recipient of bytes no single request asked for: a shuffle's or broadcast's producer
/// runs once for every reader of the next stage.
pub const NEXT_STAGE: &str = "next stage";

/// The folder a worker over `data_dir` logs to unless told otherwise.
pub fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(".shoal-audit")
}

/// One statement part, as the site saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    pub site: String,
    /// The client the statement is for, as the coordinator named it.
    pub user: String,
    /// The statement's key (one per planned statement).
    pub statement: String,
    /// sha256 of the statement's text.
    pub digest: String,
    /// "ran" or "refused".
    pub decision: String,
    /// The rules that applied (per table), or the policy key that refused.
    pub rule: String,
    /// Why it was refused (the message the client got).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Table -> columns read.
    pub tables: BTreeMap<String, Vec<String>>,
    pub rows_scanned: u64,
    /// Arrow bytes of what the part sent off the site.
    pub bytes_sent: u64,
    /// Bytes by recipient: `coordinator`, a peer site's name, or [`NEXT_STAGE`] for the
    /// output of a shuffle or broadcast that its first reader started for all of them.
    #[serde(default, deserialize_with = "sent_to_of_any_version")]
    pub sent_to: BTreeMap<String, u64>,
    pub groups_suppressed: u64,
    pub epsilon_spent: f64,
}

/// Lines written before recipients were counted say who in words (`"sent_to": "the next
/// stage ..."`): read as no recipient, so an upgraded site still reads its whole log.
fn sent_to_of_any_version<'de, D>(deserializer: D) -> Result<BTreeMap<String, u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SentTo {
        Recipients(BTreeMap<String, u64>),
        Words(#[allow(dead_code)] String),
    }
    Ok(match SentTo::deserialize(deserializer)? {
        SentTo::Recipients(recipients) => recipients,
        SentTo::Words(_) => BTreeMap::new(),
    })
}

impl AuditRecord {
    pub fn now() -> String {
        humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
    }
}

#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    rotate_bytes: u64,
    /// Serialises appends and rotation.
    lock: parking_lot::Mutex<()>,
}

impl AuditLog {
    /// Opens (creating, 0700) the log folder.
    pub fn open(dir: &Path) -> Result<Self, String> {
        Self::open_rotating_at(dir, ROTATE_BYTES)
    }

    fn open_rotating_at(dir: &Path, rotate_bytes: u64) -> Result<Self, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("audit log folder {}: {e}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            rotate_bytes,
            lock: parking_lot::Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one line. A site that cannot write its audit log says so loudly; the work
    /// itself was already decided by the policy.
    pub fn append(&self, record: &AuditRecord) {
        if let Err(e) = self.try_append(record) {
            tracing::error!(dir = %self.dir.display(), "cannot write the audit log: {e}");
        }
    }

    fn try_append(&self, record: &AuditRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let _held = self.lock.lock();
        let current = self.dir.join(CURRENT);
        if std::fs::metadata(&current)
            .is_ok_and(|m| m.len() + line.len() as u64 > self.rotate_bytes)
        {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            std::fs::rename(&current, self.dir.join(format!("audit-{stamp}.jsonl")))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&current)?;
        // One write per line: concurrent appends (O_APPEND) never interleave within it.
        file.write_all(&line)
    }
}

/// Every record in `dir`, oldest file first.
pub fn read_all(dir: &Path) -> Result<Vec<AuditRecord>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("audit log folder {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit") && n.ends_with(".jsonl"))
        })
        .collect();
    // Rotated files carry their time; the current one is the newest.
    files.sort_by_key(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        (name == CURRENT, name.to_string())
    });
    let mut records = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("audit log {}: {e}", file.display()))?;
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            records.push(
                serde_json::from_str(line).map_err(|e| {
                    format!("audit log {} line {}: {e}", file.display(), number + 1)
                })?,
            );
        }
    }
    Ok(records)
}

/// What `shoal audit` prints: totals, per user and table, and the refusals.
pub fn summary(records: &[AuditRecord]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let ran = records.iter().filter(|r| r.decision == "ran").count();
    let refused = records.len() - ran;
    let _ = writeln!(
        out,
        "{} statement part(s): {ran} ran, {refused} refused; {} rows scanned, {} bytes sent, \
         {} group(s) suppressed, epsilon spent {}",
        records.len(),
        records.iter().map(|r| r.rows_scanned).sum::<u64>(),
        records.iter().map(|r| r.bytes_sent).sum::<u64>(),
        records.iter().map(|r| r.groups_suppressed).sum::<u64>(),
        records.iter().map(|r| r.epsilon_spent).sum::<f64>(),
    );
    let mut by_recipient: BTreeMap<&str, u64> = BTreeMap::new();
    for (recipient, bytes) in records.iter().flat_map(|r| &r.sent_to) {
        *by_recipient.entry(recipient).or_default() += bytes;
    }
    if !by_recipient.is_empty() {
        let sent: Vec<String> = by_recipient
            .iter()
            .map(|(recipient, bytes)| format!("{recipient} {bytes}"))
            .collect();
        let _ = writeln!(out, "bytes sent to: {}", sent.join(", "));
    }
    let mut by_user: BTreeMap<(&str, &str), (usize, usize, u64)> = BTreeMap::new();
    for record in records {
        let tables = record.tables.keys().map(String::as_str);
        for table in tables {
            let entry = by_user.entry((&record.user, table)).or_default();
            if record.decision == "ran" {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
            entry.2 += record.bytes_sent;
        }
    }
    if !by_user.is_empty() {
        let _ = writeln!(out, "\nuser / table: ran, refused, bytes sent");
        for ((user, table), (ran, refused, bytes)) in by_user {
            let _ = writeln!(out, "  {user} / {table}: {ran}, {refused}, {bytes}");
        }
    }
    let refusals: Vec<&AuditRecord> = records.iter().filter(|r| r.decision != "ran").collect();
    if !refusals.is_empty() {
        let _ = writeln!(out, "\nrefused (latest last):");
        for record in refusals.iter().rev().take(20).rev() {
            let _ = writeln!(
                out,
                "  {} {} {}: {}",
                record.time,
                record.user,
                record.rule,
                record.reason.as_deref().unwrap_or("")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lines_are_appended_read_back_and_rotated_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_rotating_at(&dir.path().join("audit"), 400).unwrap();
        let record = AuditRecord {
            time: AuditRecord::now(),
            site: "site-1".into(),
            user: "user:alice".into(),
            decision: "refused".into(),
            rule: "egress".into(),
            reason: Some("site 'site-1' refuses: ...".into()),
            tables: BTreeMap::from([("visits".into(), vec!["age".into()])]),
            ..Default::default()
        };
        log.append(&record);
        log.append(&AuditRecord {
            decision: "ran".into(),
            ..record.clone()
        });
        let records = read_all(log.dir()).unwrap_or_default();
        let files = std::fs::read_dir(log.dir()).unwrap().count();
        assert_eq!(files, 2, "rotated into a second file");
        assert_eq!(records.last().unwrap().decision, "ran");
        let text = summary(&[
            record.clone(),
            AuditRecord {
                decision: "ran".into(),
                ..record
            },
        ]);
        assert!(text.contains("1 ran, 1 refused"), "{text}");
        assert!(text.contains("user:alice / visits: 1, 1"), "{text}");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(log.dir().join(CURRENT))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "only the operator reads it");
    }

    #[test]
    fn recipients_are_summed_and_older_lines_still_read() {
        let record = AuditRecord {
            decision: "ran".into(),
            sent_to: BTreeMap::from([("coordinator".into(), 100), ("site-2".into(), 20)]),
            ..Default::default()
        };
        let text = summary(&[record.clone(), record]);
        assert!(
            text.contains("bytes sent to: coordinator 200, site-2 40"),
            "{text}"
        );
        let old: AuditRecord = serde_json::from_str(
            r#"{"time":"t","site":"s","user":"u","statement":"q","digest":"d","decision":"ran",
                "rule":"r","tables":{},"rows_scanned":1,"bytes_sent":2,
                "sent_to":"the next stage (coordinator or peer workers)","groups_suppressed":0,
                "epsilon_spent":0.0}"#,
        )
        .unwrap();
        assert!(old.sent_to.is_empty() && old.bytes_sent == 2);
    }
}
