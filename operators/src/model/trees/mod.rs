//! A native evaluator for `ai.onnx.ml` TreeEnsembleClassifier / TreeEnsembleRegressor graphs.
//!
//! ONNX Runtime's tree kernel walks one row through one tree at a time with a branch per
//! node; on gradient-boosted models it dominates a scoring job. When a model's graph is a
//! single tree-ensemble node over one float input (what skl2onnx writes for scikit-learn's
//! forests and boosted trees, `Identity` outputs included), shoal evaluates it with
//! [`forest::Forest`] instead, producing the same outputs as ONNX Runtime would (same f32
//! summation order and post transforms; tests compare both to 1e-6 on every row). Any other
//! graph, or an ensemble using a feature this evaluator lacks, runs on ONNX Runtime as
//! before: [`NativeTrees::from_onnx`] says why in its `Err`.
//!
//! `SET shoal.inference.native_trees = false` (or `--native-trees false`) turns the native
//! evaluator off (to compare the two).

pub(crate) mod attributes;
mod forest;
mod head;
pub(crate) mod proto;

use attributes::{Attributes, Unsupported};
use forest::{Forest, Votes};
use head::Head;
use prost::Message;

/// One output tensor of a natively evaluated graph.
#[derive(Debug, Clone, PartialEq)]
pub enum NativeTensor {
    Int64 { dims: Vec<i64>, data: Vec<i64> },
    Float32 { dims: Vec<i64>, data: Vec<f32> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeOutput {
    Label,
    Scores,
}

#[derive(Debug)]
pub struct NativeTrees {
    forest: Forest,
    head: Head,
    /// For each graph output, in order: which node output it is.
    outputs: Vec<NodeOutput>,
    width: usize,
}

impl NativeTrees {
    /// Compiles a model whose graph is one tree-ensemble node reading a float [N, width]
    /// input; `Err` says why another graph is left to ONNX Runtime.
    pub fn from_onnx(bytes: &[u8], width: usize) -> Result<Self, Unsupported> {
        let model = proto::ModelProto::decode(bytes).map_err(|e| format!("not ONNX: {e}"))?;
        let graph = model.graph.ok_or("no graph")?;
        let [input] = graph.input.as_slice() else {
            return Err(format!("{} graph inputs", graph.input.len()));
        };
        let mut ensembles = graph.node.iter().filter(|n| n.op_type != "Identity");
        let (Some(node), None) = (ensembles.next(), ensembles.next()) else {
            return Err("the graph has other operators than one tree ensemble".into());
        };
        if node.domain != "ai.onnx.ml" || node.input.as_slice() != [input.name.clone()] {
            return Err(format!("operator {} over {:?}", node.op_type, node.input));
        }
        let attrs = Attributes::new(node);
        let (head, votes, outputs) = match node.op_type.as_str() {
            "TreeEnsembleRegressor" => {
                let (head, targets) = Head::regressor(&attrs)?;
                let votes = votes(
                    &attrs,
                    "target_treeids",
                    "target_nodeids",
                    "target_ids",
                    "target_weights",
                )?;
                (head, votes, targets)
            }
            "TreeEnsembleClassifier" => {
                let votes = votes(
                    &attrs,
                    "class_treeids",
                    "class_nodeids",
                    "class_ids",
                    "class_weights",
                )?;
                let (head, classes) = Head::classifier(&attrs, &votes.outputs, &votes.weights)?;
                (head, votes, classes)
            }
            other => return Err(format!("operator {other}")),
        };
        let forest = Forest::compile(&attrs, votes, outputs)?;
        if forest.min_width > width {
            return Err(format!(
                "the trees read feature {} of a {width}-wide input",
                forest.min_width - 1
            ));
        }
        // Two classes, votes for both columns possible but none for the second, no binary
        // case: ONNX Runtime refuses to write such scores; leave the model to it.
        if let Head::Classifier {
            labels,
            base_values,
            binary_case: false,
            ..
        } = &head
            && labels.len() == 2
            && base_values.len() != 2
            && !forest.scored.get(1).copied().unwrap_or(false)
        {
            return Err("a two-class ensemble with no votes for the second class".into());
        }
        let graph_outputs = graph
            .output
            .iter()
            .map(|o| resolve(&graph.node, &o.name, node))
            .collect::<Result<Vec<_>, _>>()?;
        if matches!(head, Head::Regressor { .. }) && graph_outputs.contains(&NodeOutput::Label) {
            return Err("a regressor has one output".into());
        }
        Ok(Self {
            forest,
            head,
            outputs: graph_outputs,
            width,
        })
    }

    /// The same model with only trees of at most `max_leaves` leaves evaluated by bit
    /// vectors, the others walked from their root.
    #[cfg(test)]
    fn with_bit_trees_up_to(self, max_leaves: usize) -> Self {
        Self {
            forest: self.forest.with_bit_trees_up_to(max_leaves),
            ..self
        }
    }

    /// Scores `rows` rows of the row-major float matrix `x` (`width` values per row) and
    /// returns the graph's outputs in order.
    pub fn run(&self, x: &[f32], rows: usize) -> Vec<NativeTensor> {
        let scores = self.forest.scores(x, self.width, rows);
        let n = rows as i64;
        match &self.head {
            Head::Regressor { targets, .. } => {
                let values = self.head.regress(scores, self.forest.tree_count());
                let dims = vec![n, *targets as i64];
                self.outputs
                    .iter()
                    .map(|_| NativeTensor::Float32 {
                        dims: dims.clone(),
                        data: values.clone(),
                    })
                    .collect()
            }
            Head::Classifier { labels, .. } => {
                let classified = self.head.classify(&scores, &self.forest.scored, rows);
                let classes = labels.len() as i64;
                self.outputs
                    .iter()
                    .map(|o| match o {
                        NodeOutput::Label => NativeTensor::Int64 {
                            dims: vec![n],
                            data: classified.labels.clone(),
                        },
                        NodeOutput::Scores => NativeTensor::Float32 {
                            dims: vec![n, classes],
                            data: classified.probabilities.clone(),
                        },
                    })
                    .collect()
            }
        }
    }
}

fn votes(
    attrs: &Attributes<'_>,
    trees: &str,
    nodes: &str,
    ids: &str,
    weights: &str,
) -> Result<Votes, Unsupported> {
    let votes = Votes {
        tree_ids: attrs.ints(trees),
        node_ids: attrs.ints(nodes),
        outputs: attrs.ints(ids),
        weights: attrs.floats(weights)?,
    };
    let n = votes.weights.len();
    if votes.tree_ids.len() != n || votes.node_ids.len() != n || votes.outputs.len() != n {
        return Err(format!("{weights}: the vote attributes differ in length"));
    }
    Ok(votes)
}

/// Follows `Identity` nodes back from a graph output to an output of the ensemble node.
fn resolve(
    nodes: &[proto::NodeProto],
    name: &str,
    ensemble: &proto::NodeProto,
) -> Result<NodeOutput, Unsupported> {
    let mut name = name.to_string();
    for _ in 0..=nodes.len() {
        if let Some(i) = ensemble.output.iter().position(|o| *o == name) {
            return Ok(match (ensemble.op_type.as_str(), i) {
                ("TreeEnsembleClassifier", 0) => NodeOutput::Label,
                _ => NodeOutput::Scores,
            });
        }
        let identity = nodes
            .iter()
            .find(|n| n.op_type == "Identity" && n.output.first() == Some(&name))
            .ok_or_else(|| format!("graph output '{name}' is not an output of the ensemble"))?;
        name = identity.input.first().cloned().unwrap_or_default();
    }
    Err("a cycle of Identity nodes".into())
}

#[cfg(test)]
mod tests;
