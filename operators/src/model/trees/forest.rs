//! The trees of a TreeEnsemble node, laid out for fast evaluation, and the loop that sums
//! their leaf weights over a row-major feature matrix.
//!
//! Trees of up to `shoal_kernels::trees::MAX_LEAVES` leaves (boosted ensembles' trees) find
//! their rows' leaves with bit vectors over SIMD lanes (`shoal_kernels::trees`); deeper
//! trees are walked from the root as below. Either way a row's leaf is the same, and the
//! leaf weights are summed in the same order.
//!
//! For the walk, each node is 16 bytes (threshold, feature, the two children), so a visit touches one
//! cache line. A leaf points to itself on both sides, so every walk from a root takes exactly
//! that tree's depth in steps with no branch on "is this a leaf": the comparison picks the
//! next node by index (a conditional move), and `LANES` rows walk the same tree in lockstep
//! so their independent loads overlap. Scores are summed in f32, tree by tree in the order
//! the trees appear in the graph: the order and precision ONNX Runtime uses for float
//! models, so results match it to the last bits in the common cases.

use super::attributes::{Attributes, Unsupported};
pub use shoal_kernels::trees::Comparison;
use shoal_kernels::trees::{BitTree, MAX_LEAVES, Split, TreeNode, add_leaf_weights};
use std::collections::HashMap;

/// Rows that walk one tree together.
const LANES: usize = 8;
/// Most node-by-output leaf weights a forest may allocate (256 MiB).
const MAX_LEAF_WEIGHTS: usize = 1 << 26;
/// Rows scored per pass over all trees: their features and scores stay in L1.
const BLOCK_ROWS: usize = 256;

#[derive(Debug, Clone, Copy)]
struct Node {
    threshold: f32,
    feature: u32,
    /// [false child, true child]; a leaf's own index twice.
    next: [u32; 2],
}

/// Consecutive trees evaluated the same way.
#[derive(Debug)]
enum Run {
    /// Trees small enough for bit vectors.
    Bits(Vec<BitTree>),
    /// Trees walked from the root: indexes into `roots` and `depths`.
    Walk(std::ops::Range<usize>),
}

#[derive(Debug)]
pub struct Forest {
    nodes: Vec<Node>,
    /// For each node, whether a NaN feature takes the true branch.
    missing_true: Vec<bool>,
    any_missing_true: bool,
    comparison: Comparison,
    roots: Vec<u32>,
    depths: Vec<u32>,
    /// The trees in order, in runs of those evaluated the same way.
    runs: Vec<Run>,
    /// Dense leaf weights: one value per node for each output in `voted` (zero where a
    /// leaf has no weight for it).
    leaf_values: Vec<f32>,
    pub outputs: usize,
    /// The outputs some leaf votes for, in order: only their sums are computed (a binary
    /// classifier's trees vote for one of its two columns).
    voted: Vec<usize>,
    /// Per output: whether every row gets a weight for it (see `has_score`).
    pub scored: Vec<bool>,
    /// Smallest feature-matrix width the trees can read.
    pub min_width: usize,
}

/// Leaf votes of the ensemble: (tree id, node id, output index, weight).
pub struct Votes {
    pub tree_ids: Vec<i64>,
    pub node_ids: Vec<i64>,
    pub outputs: Vec<i64>,
    pub weights: Vec<f32>,
}

impl Forest {
    pub fn compile(
        attrs: &Attributes<'_>,
        votes: Votes,
        outputs: usize,
    ) -> Result<Self, Unsupported> {
        let tree_ids = attrs.ints("nodes_treeids");
        let node_ids = attrs.ints("nodes_nodeids");
        let features = attrs.ints("nodes_featureids");
        let modes = attrs.strings("nodes_modes");
        let values = attrs.floats("nodes_values")?;
        let true_ids = attrs.ints("nodes_truenodeids");
        let false_ids = attrs.ints("nodes_falsenodeids");
        let mut missing = attrs.ints("nodes_missing_value_tracks_true");
        let n = tree_ids.len();
        if missing.is_empty() {
            missing = vec![0; n];
        }
        for (name, len) in [
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", features.len()),
            ("nodes_modes", modes.len()),
            ("nodes_values", values.len()),
            ("nodes_truenodeids", true_ids.len()),
            ("nodes_falsenodeids", false_ids.len()),
            ("nodes_missing_value_tracks_true", missing.len()),
        ] {
            if len != n {
                return Err(format!("{name} has {len} entries for {n} nodes"));
            }
        }
        if n == 0 || n > u32::MAX as usize / 2 {
            return Err(format!("{n} nodes"));
        }
        // A weight per node and output is allocated: refuse sizes a model file cannot
        // justify (a hostile n_targets) rather than allocate them.
        if outputs == 0 || n.checked_mul(outputs).is_none_or(|w| w > MAX_LEAF_WEIGHTS) {
            return Err(format!("{outputs} outputs for {n} nodes"));
        }

        // Trees are contiguous runs of nodes; the first node of a run is the root, as in
        // ONNX Runtime.
        let mut index: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
        let mut roots = Vec::new();
        let mut seen_trees = std::collections::HashSet::new();
        for i in 0..n {
            if i == 0 || tree_ids[i] != tree_ids[i - 1] {
                if !seen_trees.insert(tree_ids[i]) {
                    return Err(format!(
                        "the nodes of tree {} are not contiguous",
                        tree_ids[i]
                    ));
                }
                roots.push(i as u32);
            }
            if index.insert((tree_ids[i], node_ids[i]), i).is_some() {
                return Err(format!(
                    "node {} of tree {} appears twice",
                    node_ids[i], tree_ids[i]
                ));
            }
        }

        let mut comparison = None;
        let mut nodes = Vec::with_capacity(n);
        let mut min_width = 1;
        for i in 0..n {
            if modes[i] == "LEAF" {
                nodes.push(Node {
                    threshold: 0.0,
                    feature: 0,
                    next: [i as u32; 2],
                });
                continue;
            }
            let mode = match modes[i].as_str() {
                "BRANCH_LEQ" => Comparison::Leq,
                "BRANCH_LT" => Comparison::Lt,
                "BRANCH_GTE" => Comparison::Gte,
                "BRANCH_GT" => Comparison::Gt,
                other => return Err(format!("node mode {other}")),
            };
            if *comparison.get_or_insert(mode) != mode {
                return Err("nodes use different comparisons".into());
            }
            let child = |id: i64| {
                index
                    .get(&(tree_ids[i], id))
                    .map(|c| *c as u32)
                    .ok_or_else(|| format!("node {id} of tree {} does not exist", tree_ids[i]))
            };
            let feature =
                u32::try_from(features[i]).map_err(|_| format!("feature id {}", features[i]))?;
            min_width = min_width.max(feature as usize + 1);
            nodes.push(Node {
                threshold: values[i],
                feature,
                next: [child(false_ids[i])?, child(true_ids[i])?],
            });
        }
        let depths = roots
            .iter()
            .map(|root| depth_of(&nodes, *root as usize))
            .collect::<Result<Vec<_>, _>>()?;

        let (all_values, scored) = leaf_values(&nodes, &index, &roots, votes, outputs)?;
        let voted: Vec<usize> = (0..outputs).filter(|o| scored[*o]).collect();
        let leaf_values: Vec<f32> = all_values
            .chunks_exact(outputs)
            .flat_map(|node| voted.iter().map(|o| node[*o]))
            .collect();
        let missing_true: Vec<bool> = missing.iter().map(|m| *m != 0).collect();
        let k = voted.len();
        let runs = runs(&nodes, &missing_true, &leaf_values, k, &roots, MAX_LEAVES);
        Ok(Self {
            any_missing_true: missing_true.iter().any(|m| *m),
            missing_true,
            nodes,
            comparison: comparison.unwrap_or(Comparison::Leq),
            roots,
            depths,
            runs,
            leaf_values,
            outputs,
            voted,
            scored,
            min_width,
        })
    }

    pub fn tree_count(&self) -> usize {
        self.roots.len()
    }

    /// The same forest with only trees of at most `max_leaves` leaves evaluated by bit
    /// vectors, the others walked (to test the walk, and runs of both, on models whose
    /// trees are all small).
    #[cfg(test)]
    pub fn with_bit_trees_up_to(mut self, max_leaves: usize) -> Self {
        self.runs = runs(
            &self.nodes,
            &self.missing_true,
            &self.leaf_values,
            self.voted.len(),
            &self.roots,
            max_leaves,
        );
        self
    }

    /// How many trees find their leaves with bit vectors, and in how many runs the trees
    /// are.
    #[cfg(test)]
    pub fn bit_trees_and_runs(&self) -> (usize, usize) {
        let bits = self.runs.iter().map(|run| match run {
            Run::Bits(trees) => trees.len(),
            Run::Walk(_) => 0,
        });
        (bits.sum(), self.runs.len())
    }

    /// Sums the leaf weights each row reaches: `rows x outputs` scores, row-major.
    /// `x` is the row-major feature matrix, `width` values per row.
    pub fn scores(&self, x: &[f32], width: usize, rows: usize) -> Vec<f32> {
        debug_assert!(width >= self.min_width && x.len() >= rows * width);
        let k = self.voted.len();
        let mut scores = vec![0.0f32; rows * k];
        if k == 0 {
            return vec![0.0; rows * self.outputs];
        }
        // Run after run, so every row still sums its trees' weights in the trees' order.
        for run in &self.runs {
            match run {
                Run::Bits(trees) => {
                    // Compile made sure every tree reads within `min_width <= width`.
                    let op = self.comparison;
                    let added = add_leaf_weights(trees, op, x, width, k, &mut scores);
                    debug_assert!(added, "bit trees wider than the rows");
                }
                Run::Walk(trees) => self.walk(trees.clone(), x, width, &mut scores),
            }
        }
        if k == self.outputs {
            return scores;
        }
        let mut all = vec![0.0f32; rows * self.outputs];
        for (row, sums) in all
            .chunks_exact_mut(self.outputs)
            .zip(scores.chunks_exact(k))
        {
            for (output, sum) in self.voted.iter().zip(sums) {
                row[*output] = *sum;
            }
        }
        all
    }

    fn walk(&self, trees: std::ops::Range<usize>, x: &[f32], width: usize, scores: &mut [f32]) {
        match (self.comparison, self.any_missing_true) {
            (Comparison::Leq, false) => self.sum::<false>(trees, x, width, scores, |a, b| a <= b),
            (Comparison::Leq, true) => self.sum::<true>(trees, x, width, scores, |a, b| a <= b),
            (Comparison::Lt, false) => self.sum::<false>(trees, x, width, scores, |a, b| a < b),
            (Comparison::Lt, true) => self.sum::<true>(trees, x, width, scores, |a, b| a < b),
            (Comparison::Gte, false) => self.sum::<false>(trees, x, width, scores, |a, b| a >= b),
            (Comparison::Gte, true) => self.sum::<true>(trees, x, width, scores, |a, b| a >= b),
            (Comparison::Gt, false) => self.sum::<false>(trees, x, width, scores, |a, b| a > b),
            (Comparison::Gt, true) => self.sum::<true>(trees, x, width, scores, |a, b| a > b),
        }
    }

    fn sum<const MISSING: bool>(
        &self,
        trees: std::ops::Range<usize>,
        x: &[f32],
        width: usize,
        scores: &mut [f32],
        goes_true: impl Fn(f32, f32) -> bool + Copy,
    ) {
        let k = self.voted.len();
        let rows = scores.len() / k;
        let roots = &self.roots[trees.clone()];
        let depths = &self.depths[trees];
        for block_start in (0..rows).step_by(BLOCK_ROWS) {
            let block_end = (block_start + BLOCK_ROWS).min(rows);
            for (root, depth) in roots.iter().zip(depths) {
                let mut row = block_start;
                while row < block_end {
                    let lanes = LANES.min(block_end - row);
                    let mut at = [*root as usize; LANES];
                    for _ in 0..*depth {
                        for (lane, node_index) in at.iter_mut().enumerate().take(lanes) {
                            let node = &self.nodes[*node_index];
                            let value = x[(row + lane) * width + node.feature as usize];
                            let mut go = goes_true(value, node.threshold);
                            if MISSING {
                                go |= value.is_nan() && self.missing_true[*node_index];
                            }
                            *node_index = node.next[usize::from(go)] as usize;
                        }
                    }
                    for (lane, leaf) in at.iter().enumerate().take(lanes) {
                        let target = &mut scores[(row + lane) * k..(row + lane + 1) * k];
                        let weights = &self.leaf_values[leaf * k..(leaf + 1) * k];
                        for (score, weight) in target.iter_mut().zip(weights) {
                            *score += *weight;
                        }
                    }
                    row += lanes;
                }
            }
        }
    }
}

/// The trees in runs: those of at most `max_leaves` leaves laid out for bit vectors (with
/// their leaves' `outputs` weights from `leaf_values`), the others walked.
fn runs(
    nodes: &[Node],
    missing_true: &[bool],
    leaf_values: &[f32],
    outputs: usize,
    roots: &[u32],
    max_leaves: usize,
) -> Vec<Run> {
    let node = |i: u32| {
        let at = i as usize;
        let node = nodes.get(at)?;
        Some(if node.next[0] == i {
            TreeNode::Leaf(leaf_values.get(at * outputs..(at + 1) * outputs)?)
        } else {
            let split = Split {
                feature: node.feature,
                threshold: node.threshold,
                missing_true: missing_true.get(at).copied().unwrap_or(false),
            };
            TreeNode::Branch(split, node.next)
        })
    };
    let mut runs: Vec<Run> = Vec::new();
    for (index, root) in roots.iter().enumerate() {
        let small = tree_leaves(nodes, *root as usize).len() <= max_leaves;
        let bits = small.then(|| BitTree::new(*root, outputs, node)).flatten();
        match (bits, runs.last_mut()) {
            (Some(tree), Some(Run::Bits(trees))) => trees.push(tree),
            (Some(tree), _) => runs.push(Run::Bits(vec![tree])),
            (None, Some(Run::Walk(trees))) => trees.end = index + 1,
            (None, _) => runs.push(Run::Walk(index..index + 1)),
        }
    }
    runs
}

/// Steps from `root` to its deepest leaf; refuses cycles and shared subtrees.
fn depth_of(nodes: &[Node], root: usize) -> Result<u32, Unsupported> {
    let mut deepest = 0;
    let mut stack = vec![(root, 0u32)];
    let mut visited = 0usize;
    while let Some((at, depth)) = stack.pop() {
        visited += 1;
        if visited > nodes.len() {
            return Err("a tree has a cycle".into());
        }
        let [f, t] = nodes[at].next;
        if f as usize == at {
            deepest = deepest.max(depth);
        } else {
            stack.push((f as usize, depth + 1));
            stack.push((t as usize, depth + 1));
        }
    }
    Ok(deepest)
}

/// Dense leaf weights (`outputs` per node) and, per output, whether every row gets a weight
/// for it. ONNX Runtime treats an output no leaf voted for as "no score" (it matters for
/// the label and for binary classifiers); shoal supports ensembles where that is the same
/// for every row: some tree votes for the output on all its leaves, or no leaf does.
fn leaf_values(
    nodes: &[Node],
    index: &HashMap<(i64, i64), usize>,
    roots: &[u32],
    votes: Votes,
    outputs: usize,
) -> Result<(Vec<f32>, Vec<bool>), Unsupported> {
    let mut values = vec![0.0f32; nodes.len() * outputs];
    let mut voted = vec![false; nodes.len() * outputs];
    for i in 0..votes.weights.len() {
        let node = *index
            .get(&(votes.tree_ids[i], votes.node_ids[i]))
            .ok_or_else(|| format!("a weight for missing node {}", votes.node_ids[i]))?;
        let output = usize::try_from(votes.outputs[i])
            .ok()
            .filter(|o| *o < outputs)
            .ok_or_else(|| format!("weight for output {} of {outputs}", votes.outputs[i]))?;
        if nodes[node].next[0] as usize != node {
            return Err(format!("a weight on branch node {}", votes.node_ids[i]));
        }
        if std::mem::replace(&mut voted[node * outputs + output], true) {
            return Err("a leaf votes twice for one output".into());
        }
        values[node * outputs + output] = votes.weights[i];
    }
    let mut scored = Vec::with_capacity(outputs);
    for output in 0..outputs {
        let leaves_of = |root: usize| tree_leaves(nodes, root);
        let any = (0..nodes.len()).any(|n| voted[n * outputs + output]);
        let every_leaf_of_some_tree = roots.iter().any(|root| {
            leaves_of(*root as usize)
                .iter()
                .all(|leaf| voted[leaf * outputs + output])
        });
        if any && !every_leaf_of_some_tree {
            return Err(format!(
                "output {output} gets a vote from some leaves only: whether a row has a score depends on the row"
            ));
        }
        scored.push(any);
    }
    Ok((values, scored))
}

fn tree_leaves(nodes: &[Node], root: usize) -> Vec<usize> {
    let mut leaves = Vec::new();
    let mut stack = vec![root];
    while let Some(at) = stack.pop() {
        let [f, t] = nodes[at].next;
        if f as usize == at {
            leaves.push(at);
        } else {
            stack.push(f as usize);
            stack.push(t as usize);
        }
    }
    leaves
}
