//! The two bench jobs, as SQL and as a pipeline, and how their answers are compared.

use serde_json::Value;

pub const FEATURES: [&str; 4] = ["l_quantity", "l_extendedprice", "l_discount", "l_tax"];
/// Rows shipped since this date are scored by the aggregate job (about 57% of lineitem).
pub const SINCE: &str = "1995-01-01";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// `count(*)`, `avg(P(positive))` per `l_returnflag` over rows shipped since [`SINCE`],
    /// scored by the MLP.
    Aggregate,
    /// `(l_orderkey, l_linenumber, P(positive))` for every row, scored by the gradient-boosted
    /// trees and written as Parquet.
    Predictions,
}

impl Job {
    pub fn parse(name: &str) -> Self {
        match name {
            "aggregate" => Job::Aggregate,
            "predictions" => Job::Predictions,
            other => panic!("unknown job {other}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Job::Aggregate => "aggregate",
            Job::Predictions => "predictions",
        }
    }

    pub fn model(self) -> &'static str {
        match self {
            Job::Aggregate => "bench_mlp",
            Job::Predictions => "bench_gbdt",
        }
    }

    pub fn title(self) -> String {
        match self {
            Job::Aggregate => format!(
                "(a) MLP: count and avg(predict_proba) per l_returnflag, rows shipped since {SINCE}"
            ),
            Job::Predictions => {
                "(b) GBDT (100 trees, depth 4): predict_proba for every row, written as Parquet"
                    .into()
            }
        }
    }

    fn call(self) -> String {
        format!("predict_proba('{}', {})", self.model(), FEATURES.join(", "))
    }

    /// The job as one SQL statement (the aggregate) or the query whose rows are written.
    pub fn sql(self) -> String {
        match self {
            Job::Aggregate => format!(
                "SELECT l_returnflag, count(*) AS n, avg({}) AS p FROM lineitem \
                 WHERE l_shipdate >= DATE '{SINCE}' GROUP BY l_returnflag ORDER BY l_returnflag",
                self.call()
            ),
            Job::Predictions => format!(
                "SELECT l_orderkey, l_linenumber, {} AS p FROM lineitem",
                self.call()
            ),
        }
    }

    /// The columns the job reads: what the decode floor decodes.
    pub fn decode_sql(self) -> String {
        match self {
            Job::Aggregate => format!(
                "SELECT l_returnflag, l_shipdate, {} FROM lineitem",
                FEATURES.join(", ")
            ),
            Job::Predictions => format!(
                "SELECT l_orderkey, l_linenumber, {} FROM lineitem",
                FEATURES.join(", ")
            ),
        }
    }

    /// The rows the model scores, features only (the input of the inference floor).
    pub fn features_sql(self) -> String {
        match self {
            Job::Aggregate => format!(
                "SELECT {} FROM lineitem WHERE l_shipdate >= DATE '{SINCE}'",
                FEATURES.join(", ")
            ),
            Job::Predictions => format!("SELECT {} FROM lineitem", FEATURES.join(", ")),
        }
    }

    /// The predictions job as a pipeline writing where the data lives.
    pub fn pipeline(self, path: &str) -> String {
        let features: Vec<String> = FEATURES.iter().map(|f| format!("\"{f}\"")).collect();
        format!(
            r#"
[source.items]
table = "lineitem"
columns = ["l_orderkey", "l_linenumber", {features}]

[model.scored]
input = "items"
model = "{model}"
features = [{features}]
predict_proba = "p"

[features.out]
input = "scored"
keep = ["l_orderkey", "l_linenumber", "p"]

[sink.predictions]
input = "out"
kind = "local_parquet"
path = "{path}"
"#,
            features = features.join(", "),
            model = self.model(),
        )
    }

    /// Whether two engines' answers agree: equal counts, averages and sums within 1e-4
    /// (engines sum f32 probabilities in different orders and precisions).
    pub fn same_answer(self, a: &Value, b: &Value) -> Result<(), String> {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * x.abs().max(y.abs()).max(1.0);
        match self {
            Job::Aggregate => {
                let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
                    return Err(format!("{a} vs {b}"));
                };
                if a.len() != b.len() {
                    return Err(format!("{} groups vs {}", a.len(), b.len()));
                }
                for (flag, x) in a {
                    let y = b.get(flag).ok_or(format!("no group {flag}"))?;
                    let same = x[0].as_i64() == y[0].as_i64()
                        && close(
                            x[1].as_f64().unwrap_or(f64::NAN),
                            y[1].as_f64().unwrap_or(0.0),
                        );
                    if !same {
                        return Err(format!("group {flag}: {x} vs {y}"));
                    }
                }
                Ok(())
            }
            Job::Predictions => {
                let same = a["rows"].as_i64() == b["rows"].as_i64()
                    && close(
                        a["sum"].as_f64().unwrap_or(f64::NAN),
                        b["sum"].as_f64().unwrap_or(0.0),
                    );
                if same {
                    Ok(())
                } else {
                    Err(format!("{a} vs {b}"))
                }
            }
        }
    }
}
