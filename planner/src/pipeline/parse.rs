//! Reading a pipeline file: TOML into the spec, parameters resolved, and the node graph
//! checked (every input exists, no cycles, at least one sink). Nothing here touches data.

use super::diagnostic::{Diagnostic, PipelineError};
use super::spec::{PipelineFile, Text};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Source,
    Features,
    Model,
    Join,
    Union,
    Aggregate,
    Sink,
    Train,
}

impl NodeKind {
    pub fn table(self) -> &'static str {
        match self {
            NodeKind::Source => "source",
            NodeKind::Features => "features",
            NodeKind::Model => "model",
            NodeKind::Join => "join",
            NodeKind::Union => "union",
            NodeKind::Aggregate => "aggregate",
            NodeKind::Sink => "sink",
            NodeKind::Train => "train",
        }
    }
}

/// A node of the graph: its kind, its place in its table, and its inputs.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    /// Position in its `[kind.*]` table.
    pub index: usize,
    pub span: Range<usize>,
    /// (input key, node name, span of the name).
    pub inputs: Vec<(String, String, Range<usize>)>,
}

impl Node {
    pub fn key(&self) -> String {
        format!("{}.{}", self.kind.table(), self.name)
    }
}

/// A parsed, structurally valid pipeline.
#[derive(Debug)]
pub struct Pipeline {
    pub file: String,
    pub source: Arc<str>,
    pub spec: PipelineFile,
    /// Parameter values after `--set` overrides.
    pub params: BTreeMap<String, String>,
    /// Every node, inputs before the nodes that read them.
    pub order: Vec<Node>,
}

impl Pipeline {
    /// Parses `text` (named `file` in errors), applying `overrides` (`--set name=value`).
    pub fn parse(
        text: &str,
        file: &str,
        overrides: &[(String, String)],
    ) -> Result<Self, PipelineError> {
        let source: Arc<str> = Arc::from(text);
        let fail = |diagnostics| PipelineError::new(file, &source, diagnostics);
        let spec: PipelineFile =
            toml::from_str(text).map_err(|e| fail(vec![toml_diagnostic(&source, &e)]))?;
        let mut diagnostics = Vec::new();
        let params = resolve_params(&spec, overrides, &mut diagnostics);
        let nodes = collect_nodes(&spec, &mut diagnostics);
        let order = if diagnostics.is_empty() {
            topological_order(nodes, &mut diagnostics)
        } else {
            Vec::new()
        };
        if !diagnostics.is_empty() {
            return Err(fail(diagnostics));
        }
        Ok(Self {
            file: file.to_string(),
            source,
            spec,
            params,
            order,
        })
    }

    pub fn error(&self, diagnostics: Vec<Diagnostic>) -> PipelineError {
        PipelineError::new(&self.file, &self.source, diagnostics)
    }

    /// `text` with every `${name}` replaced by the parameter's value.
    pub fn substitute(&self, text: &Text, key: &str) -> Result<String, Diagnostic> {
        let raw = text.get_ref();
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(
                    Diagnostic::new(key, Some(text.span()), "unclosed '${' in value")
                        .with_help("write ${name} for a parameter"),
                );
            };
            let name = &after[..end];
            match self.params.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    return Err(Diagnostic::new(
                        key,
                        Some(text.span()),
                        format!("unknown parameter '${{{name}}}'"),
                    )
                    .suggest(name, self.params.keys().map(String::as_str))
                    .with_help(format!(
                        "declare it under [params] or pass --set {name}=VALUE{}",
                        nearest_hint(name, &self.params)
                    )));
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.order.iter().find(|n| n.name == name)
    }
}

fn nearest_hint(name: &str, params: &BTreeMap<String, String>) -> String {
    super::diagnostic::nearest(name, params.keys().map(String::as_str))
        .map(|n| format!(" (did you mean '{n}'?)"))
        .unwrap_or_default()
}

fn value_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn resolve_params(
    spec: &PipelineFile,
    overrides: &[(String, String)],
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<String, String> {
    let mut params: BTreeMap<String, String> = spec
        .params
        .iter()
        .map(|(k, v)| (k.get_ref().clone(), value_text(v.get_ref())))
        .collect();
    for (name, value) in overrides {
        if params.contains_key(name) {
            params.insert(name.clone(), value.clone());
        } else {
            diagnostics.push(
                Diagnostic::new(
                    format!("--set {name}"),
                    None,
                    format!("the pipeline declares no parameter '{name}'"),
                )
                .suggest(name, spec.params.iter().map(|(k, _)| k.get_ref().as_str())),
            );
        }
    }
    params
}

fn collect_nodes(spec: &PipelineFile, diagnostics: &mut Vec<Diagnostic>) -> Vec<Node> {
    let mut nodes = Vec::new();
    let input = |key: &str, t: &Text| (key.to_string(), t.get_ref().clone(), t.span());
    let mut add =
        |kind: NodeKind, index: usize, name: &Text, inputs: Vec<(String, String, Range<usize>)>| {
            nodes.push(Node {
                name: name.get_ref().clone(),
                kind,
                index,
                span: name.span(),
                inputs,
            })
        };
    for (i, (name, _)) in spec.source.0.iter().enumerate() {
        add(NodeKind::Source, i, name, vec![]);
    }
    for (i, (name, n)) in spec.features.0.iter().enumerate() {
        add(NodeKind::Features, i, name, vec![input("input", &n.input)]);
    }
    for (i, (name, n)) in spec.model.0.iter().enumerate() {
        add(NodeKind::Model, i, name, vec![input("input", &n.input)]);
    }
    for (i, (name, n)) in spec.join.0.iter().enumerate() {
        add(
            NodeKind::Join,
            i,
            name,
            vec![input("left", &n.left), input("right", &n.right)],
        );
    }
    for (i, (name, n)) in spec.union.0.iter().enumerate() {
        let inputs = n
            .inputs
            .get_ref()
            .iter()
            .map(|t| input("inputs", t))
            .collect();
        add(NodeKind::Union, i, name, inputs);
    }
    for (i, (name, n)) in spec.aggregate.0.iter().enumerate() {
        add(NodeKind::Aggregate, i, name, vec![input("input", &n.input)]);
    }
    for (i, (name, n)) in spec.sink.0.iter().enumerate() {
        add(NodeKind::Sink, i, name, vec![input("input", &n.input)]);
    }
    for (i, (name, n)) in spec.train.0.iter().enumerate() {
        add(NodeKind::Train, i, name, vec![input("input", &n.input)]);
    }
    let mut seen: HashMap<&str, &Node> = HashMap::new();
    for node in &nodes {
        if let Some(first) = seen.get(node.name.as_str()) {
            diagnostics.push(
                Diagnostic::new(
                    node.key(),
                    Some(node.span.clone()),
                    format!(
                        "node name '{}' is already used by [{}]",
                        node.name,
                        first.key()
                    ),
                )
                .with_help("node names are shared by every kind: rename one"),
            );
        } else {
            seen.insert(&node.name, node);
        }
    }
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    for node in &nodes {
        for (key, target, span) in &node.inputs {
            let key = format!("{}.{key}", node.key());
            match nodes.iter().find(|n| &n.name == target) {
                None => diagnostics.push(
                    Diagnostic::new(key, Some(span.clone()), format!("no node named '{target}'"))
                        .suggest(target, names.iter().copied()),
                ),
                Some(t) if t.kind == NodeKind::Sink || t.kind == NodeKind::Train => diagnostics
                    .push(Diagnostic::new(
                        key,
                        Some(span.clone()),
                        format!(
                            "'{target}' is a {}: it has no output to read",
                            t.kind.table()
                        ),
                    )),
                Some(_) => {}
            }
        }
    }
    if spec.sink.is_empty() && spec.train.is_empty() {
        diagnostics.push(
            Diagnostic::new(
                "sink",
                None,
                "the pipeline has no sink: nothing would be returned, written or trained",
            )
            .with_help(
                "add [sink.NAME] with input = \"...\" and kind = \"client\", \"local_parquet\" \
                 or \"object_store\", or [train.NAME]",
            ),
        );
    }
    nodes
}

/// Inputs first (Kahn's algorithm); nodes left over are on a cycle.
fn topological_order(nodes: Vec<Node>, diagnostics: &mut Vec<Diagnostic>) -> Vec<Node> {
    let mut waiting: Vec<Node> = nodes;
    let mut order: Vec<Node> = Vec::new();
    loop {
        let (ready, rest): (Vec<Node>, Vec<Node>) = waiting.into_iter().partition(|n| {
            n.inputs
                .iter()
                .all(|(_, input, _)| order.iter().any(|o| &o.name == input))
        });
        if ready.is_empty() {
            waiting = rest;
            break;
        }
        order.extend(ready);
        waiting = rest;
    }
    if let Some(first) = waiting.first() {
        let names: Vec<String> = waiting.iter().map(Node::key).collect();
        diagnostics.push(Diagnostic::new(
            first.key(),
            Some(first.span.clone()),
            format!("these nodes form a cycle: {}", names.join(" -> ")),
        ));
    }
    order
}

/// A TOML or shape error, with the key it happened at and a suggestion for unknown keys.
fn toml_diagnostic(source: &str, error: &toml::de::Error) -> Diagnostic {
    let span = error.span();
    let key = span
        .clone()
        .map_or_else(String::new, |s| key_at(source, s.start));
    let message = error.message().trim().to_string();
    let mut diagnostic = Diagnostic::new(key, span, message.clone());
    // serde: "unknown field `modle`, expected one of `input`, `model`, ..."
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let quoted: Vec<&str> = rest.split('`').step_by(2).collect();
        if let Some((unknown, candidates)) = quoted.split_first() {
            diagnostic = diagnostic.suggest(unknown, candidates.iter().copied());
        }
    }
    diagnostic
}

/// `table.key` for the line holding `offset`, from the nearest `[table]` header above it.
fn key_at(source: &str, offset: usize) -> String {
    let offset = offset.min(source.len());
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = source[line_start..].lines().next().unwrap_or_default();
    let header = source[..line_start]
        .lines()
        .rev()
        .chain(std::iter::once(line))
        .find_map(|l| {
            let l = l.trim();
            l.starts_with('[')
                .then(|| l.trim_matches(|c| c == '[' || c == ']').to_string())
        })
        .unwrap_or_default();
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().to_string())
        .filter(|k| !k.starts_with('['))
        .unwrap_or_default();
    match (header.is_empty(), key.is_empty()) {
        (false, false) => format!("{header}.{key}"),
        (false, true) => header,
        _ => key,
    }
}
