//! Named feature operations of a `[features.*]` node: each becomes a call of a feature
//! function (see `shoal_operators::udf::feature`) or a DataFusion built-in. Statistics and
//! vocabularies not given in the file are fitted by a pre-pass over the node's input on the
//! cluster: partial aggregates on the workers, so no rows move.

use super::diagnostic::Diagnostic;
use super::spec::FeatureOp;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::Column;
use datafusion::execution::FunctionRegistry;
use datafusion::functions_aggregate::expr_fn::{approx_median, avg, max, min, stddev_pop};
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use std::ops::Range;
use toml::Spanned;

/// Keys each operation takes beyond `op`, `column` and `output`.
const OPS: &[(&str, &[&str])] = &[
    ("standard_scale", &["mean", "std"]),
    ("minmax_scale", &["min", "max"]),
    ("impute", &["value", "strategy"]),
    ("one_hot", &["vocabulary", "max_categories"]),
    ("ordinal", &["vocabulary", "max_categories"]),
    ("bucketize", &["boundaries"]),
    ("hash", &["buckets"]),
    ("log1p", &[]),
    ("clip", &["lower", "upper"]),
    ("date_part", &["part"]),
    ("lowercase", &[]),
    ("token_count", &[]),
    ("hashed_ngrams", &["n", "buckets"]),
    ("regex_extract", &["pattern", "group"]),
    (
        "image",
        &[
            "height",
            "width",
            "layout",
            "channel_mean",
            "channel_std",
            "fit",
            "strict",
        ],
    ),
    (
        "audio",
        &[
            "sample_rate",
            "seconds",
            "strict",
            "n_fft",
            "hop_length",
            "n_mels",
            "mel_scale",
        ],
    ),
    ("tokenize", &["model", "max_tokens"]),
];

const DATE_PARTS: &[&str] = &[
    "year", "quarter", "month", "week", "day", "dow", "doy", "hour", "minute", "second", "epoch",
];

const DEFAULT_MAX_CATEGORIES: u64 = 100;

/// Whether fitted values are computed (run) or stood in for (validate, explain).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fitting {
    Run,
    Placeholder,
}

/// An operation checked against the keys it takes.
pub struct CheckedOp<'a> {
    pub op: &'a FeatureOp,
    pub name: &'a str,
    pub output: String,
    pub key: String,
}

fn present(op: &FeatureOp) -> Vec<(&'static str, Range<usize>)> {
    let mut keys = Vec::new();
    let mut add = |name: &'static str, span: Option<Range<usize>>| {
        if let Some(span) = span {
            keys.push((name, span));
        }
    };
    add("mean", op.mean.as_ref().map(Spanned::span));
    add("std", op.std.as_ref().map(Spanned::span));
    add("min", op.min.as_ref().map(Spanned::span));
    add("max", op.max.as_ref().map(Spanned::span));
    add("value", op.value.as_ref().map(Spanned::span));
    add("strategy", op.strategy.as_ref().map(Spanned::span));
    add("vocabulary", op.vocabulary.as_ref().map(Spanned::span));
    add(
        "max_categories",
        op.max_categories.as_ref().map(Spanned::span),
    );
    add("boundaries", op.boundaries.as_ref().map(Spanned::span));
    add("buckets", op.buckets.as_ref().map(Spanned::span));
    add("lower", op.lower.as_ref().map(Spanned::span));
    add("upper", op.upper.as_ref().map(Spanned::span));
    add("part", op.part.as_ref().map(Spanned::span));
    add("n", op.n.as_ref().map(Spanned::span));
    add("pattern", op.pattern.as_ref().map(Spanned::span));
    add("group", op.group.as_ref().map(Spanned::span));
    add("height", op.height.as_ref().map(Spanned::span));
    add("width", op.width.as_ref().map(Spanned::span));
    add("layout", op.layout.as_ref().map(Spanned::span));
    add("channel_mean", op.channel_mean.as_ref().map(Spanned::span));
    add("channel_std", op.channel_std.as_ref().map(Spanned::span));
    add("fit", op.fit.as_ref().map(Spanned::span));
    add("strict", op.strict.as_ref().map(Spanned::span));
    add("sample_rate", op.sample_rate.as_ref().map(Spanned::span));
    add("seconds", op.seconds.as_ref().map(Spanned::span));
    add("n_fft", op.n_fft.as_ref().map(Spanned::span));
    add("hop_length", op.hop_length.as_ref().map(Spanned::span));
    add("n_mels", op.n_mels.as_ref().map(Spanned::span));
    add("mel_scale", op.mel_scale.as_ref().map(Spanned::span));
    add("model", op.model.as_ref().map(Spanned::span));
    add("max_tokens", op.max_tokens.as_ref().map(Spanned::span));
    keys
}

/// Checks the op name and that only its own keys are given.
pub fn check<'a>(op: &'a FeatureOp, key: &str) -> Result<CheckedOp<'a>, Diagnostic> {
    let name = op.op.get_ref().as_str();
    let Some((_, allowed)) = OPS.iter().find(|(n, _)| *n == name) else {
        return Err(Diagnostic::new(
            format!("{key}.op"),
            Some(op.op.span()),
            format!("unknown feature operation '{name}'"),
        )
        .suggest(name, OPS.iter().map(|(n, _)| *n)));
    };
    for (given, span) in present(op) {
        if !allowed.contains(&given) {
            let takes = if allowed.is_empty() {
                "no other keys".to_string()
            } else {
                allowed.join(", ")
            };
            return Err(Diagnostic::new(
                format!("{key}.{given}"),
                Some(span),
                format!("key '{given}' does not apply to op '{name}' (it takes: {takes})"),
            ));
        }
    }
    let output = op
        .output
        .as_ref()
        .map(|o| o.get_ref().clone())
        .unwrap_or_else(|| format!("{}_{name}", op.column.get_ref()));
    Ok(CheckedOp {
        op,
        name,
        output,
        key: key.to_string(),
    })
}

fn missing(c: &CheckedOp, what: &str, example: &str) -> Diagnostic {
    Diagnostic::new(
        c.key.clone(),
        Some(c.op.op.span()),
        format!("op '{}' needs '{what}'", c.name),
    )
    .with_help(format!("for example {example}"))
}

/// The aggregates a numeric statistic needs, computed in one pre-pass per node.
pub fn statistics_needed(c: &CheckedOp) -> Result<Vec<Expr>, Diagnostic> {
    let x = || col(Column::from_name(c.op.column.get_ref()));
    let as_f64 = |e: Expr| datafusion::logical_expr::cast(e, DataType::Float64);
    let exprs = match c.name {
        "standard_scale" if c.op.mean.is_none() || c.op.std.is_none() => {
            vec![avg(x()), stddev_pop(x())]
        }
        "minmax_scale" if c.op.min.is_none() || c.op.max.is_none() => vec![min(x()), max(x())],
        "impute" => match (c.op.value.as_ref(), c.op.strategy.as_ref()) {
            (Some(_), None) => vec![],
            (None, Some(s)) => match s.get_ref().as_str() {
                "mean" => vec![avg(x())],
                "median" => vec![approx_median(x())],
                "min" => vec![min(x())],
                "max" => vec![max(x())],
                other => {
                    return Err(Diagnostic::new(
                        format!("{}.strategy", c.key),
                        Some(s.span()),
                        format!("unknown impute strategy '{other}'"),
                    )
                    .suggest(other, ["mean", "median", "min", "max"]));
                }
            },
            _ => {
                return Err(missing(
                    c,
                    "either value or strategy",
                    "value = 0 or strategy = \"mean\"",
                ));
            }
        },
        _ => vec![],
    };
    Ok(exprs.into_iter().map(as_f64).collect())
}

/// Reads the pre-pass row's f64 values at `columns`.
pub fn read_statistics(row: &[datafusion::arrow::array::ArrayRef]) -> Vec<Option<f64>> {
    row.iter()
        .map(|a| {
            let a = cast(a, &DataType::Float64).ok()?;
            let a = a.as_primitive::<Float64Type>();
            (a.len() == 1 && a.is_valid(0)).then(|| a.value(0))
        })
        .collect()
}

/// The vocabulary of a one_hot / ordinal op: given, or the sorted distinct values of the
/// column found by a distributed DISTINCT (refused past max_categories).
pub async fn vocabulary(
    c: &CheckedOp<'_>,
    input: &DataFrame,
    fitting: Fitting,
) -> Result<Vec<String>, Diagnostic> {
    if let Some(v) = &c.op.vocabulary {
        if v.get_ref().is_empty() {
            return Err(Diagnostic::new(
                format!("{}.vocabulary", c.key),
                Some(v.span()),
                "the vocabulary is empty",
            ));
        }
        return Ok(v.get_ref().clone());
    }
    if fitting == Fitting::Placeholder {
        return Ok(vec!["<learned at run time>".into()]);
    }
    let limit =
        c.op.max_categories
            .as_ref()
            .map_or(DEFAULT_MAX_CATEGORIES, |m| *m.get_ref());
    let column = col(Column::from_name(c.op.column.get_ref()));
    let failed = |e: datafusion::error::DataFusionError| {
        Diagnostic::new(
            c.key.clone(),
            Some(c.op.column.span()),
            format!(
                "learning the vocabulary of '{}': {e}",
                c.op.column.get_ref()
            ),
        )
    };
    let batches = input
        .clone()
        .select(vec![column.clone().alias("v")])
        .and_then(|d| d.distinct())
        .and_then(|d| d.sort(vec![col("v").sort(true, true)]))
        .and_then(|d| d.limit(0, Some(limit as usize + 1)))
        .map_err(failed)?
        .collect()
        .await
        .map_err(failed)?;
    let mut words = Vec::new();
    for batch in &batches {
        let text = cast(batch.column(0), &DataType::Utf8).map_err(|e| failed(e.into()))?;
        words.extend(text.as_string::<i32>().iter().flatten().map(String::from));
    }
    if words.len() as u64 > limit {
        return Err(Diagnostic::new(
            c.key.clone(),
            Some(c.op.column.span()),
            format!(
                "column '{}' has more than {limit} distinct values",
                c.op.column.get_ref()
            ),
        )
        .with_help("give a vocabulary, raise max_categories, or use op = \"hash\""));
    }
    Ok(words)
}

/// `image_tensor(column, height, width, layout, mean x3, std x3, fit)`: the SQL function
/// checks the values themselves while the pipeline plans (sizes, layout, fit).
fn image_tensor(
    c: &CheckedOp,
    call: impl Fn(&str, Vec<Expr>) -> Result<Expr, Diagnostic>,
) -> Result<Expr, Diagnostic> {
    let (Some(h), Some(w)) = (&c.op.height, &c.op.width) else {
        return Err(missing(c, "height and width", "height = 224, width = 224"));
    };
    let three = |given: &Option<Spanned<Vec<f64>>>, key: &str, default: f64| match given {
        None => Ok(vec![default; 3]),
        Some(v) if v.get_ref().len() == 3 => Ok(v.get_ref().clone()),
        Some(v) => Err(Diagnostic::new(
            format!("{}.{key}", c.key),
            Some(v.span()),
            format!(
                "{key} takes one value per channel (R, G, B): 3, not {}",
                v.get_ref().len()
            ),
        )),
    };
    let mut args = vec![
        lit(*h.get_ref()),
        lit(*w.get_ref()),
        lit(c
            .op
            .layout
            .as_ref()
            .map_or("nchw", |l| l.get_ref().as_str())),
    ];
    args.extend(
        three(&c.op.channel_mean, "channel_mean", 0.0)?
            .into_iter()
            .map(lit),
    );
    args.extend(
        three(&c.op.channel_std, "channel_std", 1.0)?
            .into_iter()
            .map(lit),
    );
    args.push(lit(c
        .op
        .fit
        .as_ref()
        .map_or("crop", |f| f.get_ref().as_str())));
    let strict = c.op.strict.as_ref().is_some_and(|s| *s.get_ref());
    call(
        if strict {
            "image_tensor_strict"
        } else {
            "image_tensor"
        },
        args,
    )
}

/// The expression of a checked op, given its fitted statistics (in `statistics_needed`
/// order) and vocabulary.
pub fn expression(
    ctx: &SessionContext,
    c: &CheckedOp,
    stats: &[Option<f64>],
    vocabulary: &[String],
) -> Result<Expr, Diagnostic> {
    let x = col(Column::from_name(c.op.column.get_ref()));
    let call = |name: &str, mut args: Vec<Expr>| -> Result<Expr, Diagnostic> {
        let udf = ctx
            .udf(name)
            .map_err(|e| Diagnostic::new(c.key.clone(), None, e.to_string()))?;
        args.insert(0, x.clone());
        Ok(udf.call(args))
    };
    let stat = |i: usize, given: &Option<Spanned<f64>>| -> Result<f64, Diagnostic> {
        match given {
            Some(v) => Ok(*v.get_ref()),
            None => stats.get(i).copied().flatten().ok_or_else(|| {
                Diagnostic::new(
                    c.key.clone(),
                    Some(c.op.column.span()),
                    format!(
                        "column '{}' has no non-null values to fit '{}' on",
                        c.op.column.get_ref(),
                        c.name
                    ),
                )
            }),
        }
    };
    let words = || {
        vocabulary
            .iter()
            .map(|w| lit(w.as_str()))
            .collect::<Vec<_>>()
    };
    let expr = match c.name {
        "standard_scale" => call(
            "scale_standard",
            vec![lit(stat(0, &c.op.mean)?), lit(stat(1, &c.op.std)?)],
        )?,
        "minmax_scale" => call(
            "scale_minmax",
            vec![lit(stat(0, &c.op.min)?), lit(stat(1, &c.op.max)?)],
        )?,
        "impute" => call("impute", vec![lit(stat(0, &c.op.value)?)])?,
        "one_hot" => call("one_hot", words())?,
        "ordinal" => call("ordinal_encode", words())?,
        "bucketize" => {
            let Some(b) = &c.op.boundaries else {
                return Err(missing(c, "boundaries", "boundaries = [10, 20, 30]"));
            };
            call("bucketize", b.get_ref().iter().map(|v| lit(*v)).collect())?
        }
        "hash" => {
            let Some(b) = &c.op.buckets else {
                return Err(missing(c, "buckets", "buckets = 1024"));
            };
            call("hash_bucket", vec![lit(*b.get_ref())])?
        }
        "log1p" => call("log1p", vec![])?,
        "clip" => match (&c.op.lower, &c.op.upper) {
            (Some(l), Some(u)) => call("clip", vec![lit(*l.get_ref()), lit(*u.get_ref())])?,
            _ => return Err(missing(c, "lower and upper", "lower = 0, upper = 100")),
        },
        "date_part" => {
            let Some(part) = &c.op.part else {
                return Err(missing(c, "part", "part = \"month\""));
            };
            if !DATE_PARTS.contains(&part.get_ref().as_str()) {
                return Err(Diagnostic::new(
                    format!("{}.part", c.key),
                    Some(part.span()),
                    format!("unknown date part '{}'", part.get_ref()),
                )
                .suggest(part.get_ref(), DATE_PARTS.iter().copied()));
            }
            datafusion::functions::datetime::expr_fn::date_part(lit(part.get_ref().as_str()), x)
        }
        "lowercase" => datafusion::functions::string::expr_fn::lower(x),
        "token_count" => call("token_count", vec![])?,
        "hashed_ngrams" => {
            let Some(b) = &c.op.buckets else {
                return Err(missing(c, "buckets", "n = 2, buckets = 256"));
            };
            let n = c.op.n.as_ref().map_or(1, |n| *n.get_ref());
            call("hashed_ngrams", vec![lit(n), lit(*b.get_ref())])?
        }
        "image" => image_tensor(c, call)?,
        "audio" => {
            let (Some(rate), Some(seconds)) = (&c.op.sample_rate, &c.op.seconds) else {
                return Err(missing(
                    c,
                    "sample_rate and seconds",
                    "sample_rate = 16000, seconds = 10",
                ));
            };
            let strict = c.op.strict.as_ref().is_some_and(|s| *s.get_ref());
            let mut args = vec![lit(*rate.get_ref()), lit(*seconds.get_ref())];
            let spectrogram = (&c.op.n_fft, &c.op.hop_length, &c.op.n_mels);
            let name = match spectrogram {
                (None, None, None) if c.op.mel_scale.is_none() => "audio_tensor",
                (Some(n_fft), Some(hop), Some(mels)) => {
                    args.extend([
                        lit(*n_fft.get_ref()),
                        lit(*hop.get_ref()),
                        lit(*mels.get_ref()),
                    ]);
                    if let Some(scale) = &c.op.mel_scale {
                        args.push(lit(scale.get_ref().as_str()));
                    }
                    "audio_spectrogram"
                }
                _ => {
                    return Err(missing(
                        c,
                        "n_fft, hop_length and n_mels together (for a spectrogram)",
                        "n_fft = 400, hop_length = 160, n_mels = 80",
                    ));
                }
            };
            let name = match (name, strict) {
                (name, false) => name.to_string(),
                (name, true) => format!("{name}_strict"),
            };
            call(&name, args)?
        }
        "tokenize" => {
            let (Some(model), Some(tokens)) = (&c.op.model, &c.op.max_tokens) else {
                return Err(missing(
                    c,
                    "model and max_tokens",
                    "model = \"review_sentiment\", max_tokens = 128",
                ));
            };
            call(
                "tokenize",
                vec![lit(model.get_ref().as_str()), lit(*tokens.get_ref())],
            )?
        }
        "regex_extract" => {
            let Some(p) = &c.op.pattern else {
                return Err(missing(c, "pattern", "pattern = \"level=(\\\\w+)\""));
            };
            if let Err(e) = regex::Regex::new(p.get_ref()) {
                return Err(Diagnostic::new(
                    format!("{}.pattern", c.key),
                    Some(p.span()),
                    format!("invalid regular expression: {e}"),
                ));
            }
            let group = c.op.group.as_ref().map_or(1, |g| *g.get_ref());
            call("regex_extract", vec![lit(p.get_ref().as_str()), lit(group)])?
        }
        other => {
            return Err(Diagnostic::new(
                c.key.clone(),
                None,
                format!("op '{other}' has no expression"),
            ));
        }
    };
    Ok(expr.alias(c.output.clone()))
}

/// For explain and the run summary: what was fitted.
pub fn describe_fit(c: &CheckedOp, stats: &[Option<f64>], vocabulary: &[String]) -> Option<String> {
    let values: Vec<String> = stats
        .iter()
        .map(|v| v.map_or("null".into(), |v| format!("{v:.6}")))
        .collect();
    match c.name {
        "one_hot" | "ordinal" if c.op.vocabulary.is_none() => Some(format!(
            "{} {}: vocabulary [{}] learned by a distributed DISTINCT",
            c.name,
            c.op.column.get_ref(),
            vocabulary.join(", ")
        )),
        _ if !stats.is_empty() => Some(format!(
            "{} {}: fitted [{}] by a distributed pre-pass",
            c.name,
            c.op.column.get_ref(),
            values.join(", ")
        )),
        _ => None,
    }
}
