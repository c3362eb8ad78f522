//! `CREATE MODEL name [OPTIONS (key = value, ...)] AS TRAIN kind PREDICTING label
//! FROM (query)` as parsed by [`crate::statement::ShoalStatement::parse`].

#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    Number(f64),
    Text(String),
    List(Vec<OptionValue>),
}

impl std::fmt::Display for OptionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionValue::Number(n) => write!(f, "{n}"),
            OptionValue::Text(s) => write!(f, "'{s}'"),
            OptionValue::List(items) => {
                let items: Vec<String> = items.iter().map(|i| i.to_string()).collect();
                write!(f, "[{}]", items.join(", "))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateModel {
    pub name: String,
    /// `linear`, `logistic` or `mlp` (checked by the training options).
    pub kind: String,
    pub label: String,
    /// The rows to train on: the query inside `FROM ( ... )`.
    pub query: String,
    /// In the order written.
    pub options: Vec<(String, OptionValue)>,
}

/// How the statement is written, for parse errors.
pub const USAGE: &str = "CREATE MODEL name [OPTIONS (key = value, ...)] AS TRAIN linear|logistic|mlp \
                     PREDICTING label FROM (SELECT features..., label FROM ...)";
