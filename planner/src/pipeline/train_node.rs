//! A `[train.*]` node: the input's feature and label columns, and the `CREATE MODEL`
//! statement that trains on them, checked before anything runs (kind, label, features and
//! options, each error at its key).

use super::compile::{
    Compiled, CompiledOutput, SinkKind, check_columns, df_error, field_names, input,
};
use super::diagnostic::Diagnostic;
use super::parse::{Node, Pipeline};
use datafusion::prelude::DataFrame;
use shoal_sql::train::CreateModel;
use shoal_sql::train::options::{ModelKind, TrainConfig};
use shoal_sql::train::statement::OptionValue;
use std::collections::HashMap;

pub(super) fn train(
    pipeline: &Pipeline,
    node: &Node,
    frames: &HashMap<String, DataFrame>,
    out: &mut Compiled,
) -> Result<DataFrame, Diagnostic> {
    let spec = &pipeline.spec.train.0[node.index].1;
    let key = node.key();
    let df = input(frames, &spec.input)?.clone();
    shoal_operators::model::check_model_name(&node.name)
        .map_err(|e| Diagnostic::new(&key, Some(node.span.clone()), e.to_string()))?;
    let kind_text = pipeline.substitute(&spec.kind, &format!("{key}.kind"))?;
    let kind = ModelKind::parse(&kind_text).map_err(|m| {
        Diagnostic::new(format!("{key}.kind"), Some(spec.kind.span()), m)
            .suggest(&kind_text, ["linear", "logistic", "mlp"])
    })?;
    let what = format!("the input '{}'", spec.input.get_ref());
    check_columns(
        &df,
        &format!("{key}.label"),
        std::slice::from_ref(&spec.label),
        &what,
    )?;
    let label = spec.label.get_ref().clone();
    let features: Vec<String> = match &spec.features {
        Some(list) => {
            check_columns(&df, &format!("{key}.features"), list.get_ref(), &what)?;
            list.get_ref().iter().map(|t| t.get_ref().clone()).collect()
        }
        None => field_names(&df)
            .into_iter()
            .filter(|n| n != &label)
            .collect(),
    };
    let mut options = Vec::new();
    for (name, value) in spec.options.iter() {
        let option_key = format!("{key}.options.{}", name.get_ref());
        let value = option_value(value.get_ref())
            .map_err(|m| Diagnostic::new(&option_key, Some(value.span()), m))?;
        options.push((name.get_ref().clone(), value));
    }
    if let Err(message) = TrainConfig::from_options(kind, &options) {
        // Point at the option the message names, else at the options table.
        let span = spec
            .options
            .iter()
            .find(|(name, _)| message.contains(&format!("'{}'", name.get_ref())))
            .map(|(name, _)| name.span())
            .unwrap_or(node.span.clone());
        return Err(Diagnostic::new(
            format!("{key}.options"),
            Some(span),
            message,
        ));
    }
    let columns: Vec<&str> = features
        .iter()
        .chain(std::iter::once(&label))
        .map(String::as_str)
        .collect();
    let names = field_names(&df);
    let selected = df
        .select_columns(&columns)
        .map_err(|e| df_error(&key, Some(node.span.clone()), e, &names))?;
    out.steps.push(format!(
        "train {}: {kind_text} model predicting {label} from [{}] of '{}'; statistics and model \
         updates return, rows stay on the sites; registered as model '{}'",
        node.name,
        features.join(", "),
        spec.input.get_ref(),
        node.name
    ));
    out.outputs.push(CompiledOutput {
        sink: node.name.clone(),
        kind: SinkKind::Train(CreateModel {
            name: node.name.clone(),
            kind: kind_text,
            label,
            query: String::new(),
            options,
        }),
        dataframe: selected.clone(),
    });
    Ok(selected)
}

/// A TOML option value as `CREATE MODEL` would have it: a scalar, or a list of scalars
/// (lists do not nest, as in the statement).
fn option_value(value: &toml::Value) -> Result<OptionValue, String> {
    match value {
        toml::Value::Array(items) => Ok(OptionValue::List(
            items.iter().map(option_scalar).collect::<Result<_, _>>()?,
        )),
        scalar => option_scalar(scalar),
    }
}

fn option_scalar(value: &toml::Value) -> Result<OptionValue, String> {
    Ok(match value {
        toml::Value::Integer(i) => OptionValue::Number(*i as f64),
        toml::Value::Float(f) => OptionValue::Number(*f),
        toml::Value::String(s) => OptionValue::Text(s.to_ascii_lowercase()),
        toml::Value::Boolean(b) => OptionValue::Text(b.to_string()),
        other => {
            return Err(format!(
                "an option takes a number, a string or a list of them, found {other}"
            ));
        }
    })
}
