//! Errors in a pipeline file, pointing at the key, line and column, with the nearest valid
//! name when a name was misspelled.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// The TOML key path it concerns, e.g. `model.risk.input`.
    pub key: String,
    pub message: String,
    /// Byte range in the file, when known.
    pub span: Option<Range<usize>>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(
        key: impl Into<String>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
            span,
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds "did you mean 'x'?" when a candidate is close to `name`.
    pub fn suggest<'a>(self, name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Self {
        let candidates: Vec<&str> = candidates.into_iter().collect();
        match nearest(name, candidates.iter().copied()) {
            Some(best) => self.with_help(format!("did you mean '{best}'?")),
            None if !candidates.is_empty() && candidates.len() <= 12 => {
                self.with_help(format!("valid names: {}", candidates.join(", ")))
            }
            None => self,
        }
    }
}

/// The closest candidate by edit distance, if it is close enough to be a likely typo.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| {
            (
                strsim::levenshtein(&name.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Everything wrong with one pipeline file.
#[derive(Debug, Clone)]
pub struct PipelineError {
    pub file: String,
    pub source: Arc<str>,
    pub diagnostics: Vec<Diagnostic>,
}

impl PipelineError {
    pub fn new(file: &str, source: &Arc<str>, diagnostics: Vec<Diagnostic>) -> Self {
        Self {
            file: file.to_string(),
            source: source.clone(),
            diagnostics,
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        line_column(&self.source, offset)
    }
}

pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl fmt::Display for PipelineError {
    /// rustc-style: the message, the location, the line with the span underlined, the help.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "error: [{}] {}", d.key, d.message)?;
            match &d.span {
                Some(span) => {
                    let (line, column) = self.line_column(span.start);
                    writeln!(f, "  --> {}:{line}:{column}", self.file)?;
                    if let Some(text) = self.source.lines().nth(line - 1) {
                        let width = line.to_string().len();
                        let end_on_line = text.len().min(column - 1 + (span.end - span.start));
                        let marks = end_on_line.saturating_sub(column - 1).max(1);
                        writeln!(f, "{:width$} |", "")?;
                        writeln!(f, "{line} | {text}")?;
                        writeln!(
                            f,
                            "{:width$} | {}{}",
                            "",
                            " ".repeat(column - 1),
                            "^".repeat(marks)
                        )?;
                    }
                }
                None => writeln!(f, "  --> {}", self.file)?,
            }
            if let Some(help) = &d.help {
                writeln!(f, "  = help: {help}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for PipelineError {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nearest_finds_typos_only() {
        let names = ["item_features", "items", "risk"];
        assert_eq!(nearest("item_feature", names), Some("item_features"));
        assert_eq!(nearest("rsik", names), Some("risk"));
        assert_eq!(nearest("completely_else", names), None);
    }

    #[test]
    fn renders_location_and_underline() {
        let source: Arc<str> = Arc::from("[model.m]\ninput = \"itms\"\n");
        let start = source.find("\"itms\"").unwrap();
        let err = PipelineError::new(
            "p.toml",
            &source,
            vec![
                Diagnostic::new(
                    "model.m.input",
                    Some(start..start + 6),
                    "no node named 'itms'",
                )
                .suggest("itms", ["items"]),
            ],
        );
        let text = err.to_string();
        assert!(text.contains("p.toml:2:9"), "{text}");
        assert!(
            text.contains("2 | input = \"itms\"\n  |         ^^^^^^"),
            "{text}"
        );
        assert!(text.contains("did you mean 'items'?"), "{text}");
    }
}
