//! The exit leaves of small decision trees for many rows at once: QuickScorer's bit
//! vectors (Lucchese et al., SIGIR 2015) evaluated over SIMD lanes of rows.
//!
//! Why not a walk from the root: a walk is a chain of dependent loads (node, then the
//! feature it reads, then the next node), about 2-3 ns a node even with eight rows walking
//! in lockstep. Here every branch node of a tree is tested for a whole vector of rows with
//! one compare, and no load depends on an earlier one.
//!
//! How: number a tree's leaves left to right, the true child's subtree first. A row starts
//! with every leaf's bit set; each branch node the row does *not* go true at clears the
//! leaves of its true subtree (they cannot be reached). The row's exit leaf is then the
//! lowest bit left: every leaf left of it was cleared by a node on the row's path, and the
//! path's own leaf is never cleared. The tests commute, so they run in any order, all
//! independent, and the cost is a tree's branch count over the lanes, not its depth times
//! a load's latency. It suits the trees of boosted ensembles (up to `MAX_LEAVES` leaves:
//! depth 6, or LightGBM's 31 leaves); deeper trees are walked by the caller.
//!
//! Comparisons are the same f32 comparisons a walk makes, so the leaves are exactly a
//! walk's (and ONNX Runtime's): NaN fails every comparison and takes the true branch only
//! at nodes that say so.

use pulp::{Arch, Simd, WithSimd};

/// Most leaves a tree may have to be evaluated here: two 32-bit words of bits a row.
pub const MAX_LEAVES: usize = 64;

/// Rows the kernel transposes and evaluates together; their features stay in L1.
const BLOCK_ROWS: usize = 256;

/// Vectors of rows a tree's tests run over at once, their bits held in registers (with two
/// words, 8 of the 16 AVX2 registers).
const CHUNK: usize = 4;

/// What a branch node's threshold test is; every node of an ensemble uses the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `x <= threshold` goes to the true child.
    Leq,
    Lt,
    Gte,
    Gt,
}

/// A branch node's test, as the caller describes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Split {
    pub feature: u32,
    pub threshold: f32,
    /// Whether a NaN feature takes the true branch.
    pub missing_true: bool,
}

/// One branch node's effect on one word of a row's leaf bits.
#[derive(Debug, Clone, Copy)]
struct Test {
    feature: usize,
    threshold: f32,
    missing_true: bool,
    /// The word's bits kept when the row does not go true here: its true subtree's leaves
    /// cleared.
    keep: u32,
}

/// A node of a tree as the caller describes it.
#[derive(Debug, Clone, Copy)]
pub enum TreeNode<'a> {
    /// A test, and the children it leads to: `[if false, if true]`, as the caller numbers
    /// nodes.
    Branch(Split, [u32; 2]),
    /// A leaf's weights, one per output.
    Leaf(&'a [f32]),
}

/// A tree laid out for bit-vector evaluation.
#[derive(Debug, Clone)]
pub struct BitTree {
    /// The tests on leaves 0-31 and on leaves 32-63: two loops, so that each keeps its word
    /// in registers.
    low: Vec<Test>,
    high: Vec<Test>,
    /// The leaves' weights in bit order, `outputs` a leaf.
    weights: Vec<f32>,
    outputs: usize,
    /// Smallest row width the tests can read.
    width: usize,
}

impl BitTree {
    /// Lays out the tree at `root`, whose leaves have `outputs` weights each; `node(i)` is
    /// node `i`. `None` for a tree of more than `MAX_LEAVES` leaves, one that loops, a
    /// leaf of another number of weights, or no outputs.
    pub fn new<'a>(
        root: u32,
        outputs: usize,
        node: impl Fn(u32) -> Option<TreeNode<'a>>,
    ) -> Option<Self> {
        if outputs == 0 {
            return None;
        }
        let mut tree = Self {
            low: Vec::new(),
            high: Vec::new(),
            weights: Vec::new(),
            outputs,
            width: 0,
        };
        let mut visits = 0;
        tree.visit(root, &node, &mut visits)?;
        Some(tree)
    }

    fn leaves(&self) -> usize {
        self.weights.len() / self.outputs
    }

    /// Numbers the leaves under `at` from `leaves()` on and returns their range.
    fn visit<'a>(
        &mut self,
        at: u32,
        node: &impl Fn(u32) -> Option<TreeNode<'a>>,
        visits: &mut usize,
    ) -> Option<(usize, usize)> {
        // A tree of MAX_LEAVES leaves has fewer than 2 * MAX_LEAVES nodes: more visits
        // mean a larger tree or a cycle; this also bounds the recursion.
        *visits += 1;
        if *visits >= 2 * MAX_LEAVES {
            return None;
        }
        let (split, [if_false, if_true]) = match node(at)? {
            TreeNode::Branch(split, children) => (split, children),
            TreeNode::Leaf(weights) => {
                let ordinal = self.leaves();
                if ordinal == MAX_LEAVES || weights.len() != self.outputs {
                    return None;
                }
                self.weights.extend_from_slice(weights);
                return Some((ordinal, ordinal + 1));
            }
        };
        let (first, cleared_end) = self.visit(if_true, node, visits)?;
        let (_, end) = self.visit(if_false, node, visits)?;
        self.width = self.width.max(split.feature as usize + 1);
        for (word, tests) in [&mut self.low, &mut self.high].into_iter().enumerate() {
            let (lo, hi) = (32 * word, 32 * word + 32);
            let (from, to) = (first.max(lo), cleared_end.min(hi));
            if from < to {
                let span = to - from;
                let cleared = (u32::MAX >> (32 - span)) << (from - lo);
                tests.push(Test {
                    feature: split.feature as usize,
                    threshold: split.threshold,
                    missing_true: split.missing_true,
                    keep: !cleared,
                });
            }
        }
        Some((first, end))
    }

    /// Smallest row width the tree reads.
    pub fn width(&self) -> usize {
        self.width
    }
}

/// Adds to `scores` (row-major, `outputs` a row) the weights of the leaf each of `trees`
/// takes each row of the row-major `x` to (`width` values a row). A row's weights are
/// added tree by tree in the trees' order, as a walk would add them. Refused (`false`,
/// nothing added) where a tree reads past `width`, a tree's leaves have another number of
/// outputs, or `x` or `scores` is short.
pub fn add_leaf_weights(
    trees: &[BitTree],
    comparison: Comparison,
    x: &[f32],
    width: usize,
    outputs: usize,
    scores: &mut [f32],
) -> bool {
    let rows = scores.len() / outputs.max(1);
    let fits = trees
        .iter()
        .all(|t| t.width <= width && t.outputs == outputs);
    if !fits || outputs == 0 || Some(x.len()) < rows.checked_mul(width) {
        return false;
    }
    let any_missing_true = trees
        .iter()
        .flat_map(|t| t.low.iter().chain(&t.high))
        .any(|t| t.missing_true);
    Arch::new().dispatch(LeafWeights {
        trees,
        comparison,
        any_missing_true,
        x,
        width,
        rows,
        outputs,
        scores,
    });
    true
}

struct LeafWeights<'a> {
    trees: &'a [BitTree],
    comparison: Comparison,
    any_missing_true: bool,
    x: &'a [f32],
    width: usize,
    rows: usize,
    outputs: usize,
    scores: &'a mut [f32],
}

impl WithSimd for LeafWeights<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // One copy of the loops per comparison, each with a constant: the compare's match
        // folds away. (A closure passed in would not be inlined into pulp's
        // target-feature function, and would cost a call per vector.)
        match (self.comparison, self.any_missing_true) {
            (Comparison::Leq, false) => self.run::<S, LEQ, false>(simd),
            (Comparison::Leq, true) => self.run::<S, LEQ, true>(simd),
            (Comparison::Lt, false) => self.run::<S, LT, false>(simd),
            (Comparison::Lt, true) => self.run::<S, LT, true>(simd),
            (Comparison::Gte, false) => self.run::<S, GTE, false>(simd),
            (Comparison::Gte, true) => self.run::<S, GTE, true>(simd),
            (Comparison::Gt, false) => self.run::<S, GT, false>(simd),
            (Comparison::Gt, true) => self.run::<S, GT, true>(simd),
        }
    }
}

const LEQ: u8 = 0;
const LT: u8 = 1;
const GTE: u8 = 2;
const GT: u8 = 3;

impl LeafWeights<'_> {
    #[inline(always)]
    fn run<S: Simd, const OP: u8, const MISSING: bool>(self, simd: S) {
        let lanes = S::F32_LANES;
        let chunk_rows = CHUNK * lanes;
        let block_rows = BLOCK_ROWS.div_ceil(chunk_rows) * chunk_rows;
        let features = self.trees.iter().map(|t| t.width).max().unwrap_or(0);
        // The block column-major and cut in chunks: chunk c, feature f is CHUNK vectors at
        // `(c * features + f) * chunk_rows`. Rows past the end are zeros; their leaves are
        // not reported.
        let mut columns = vec![0.0f32; block_rows * features.max(1)];
        let mut bits = vec![0u32; 2 * chunk_rows];
        let k = self.outputs;
        for start in (0..self.rows).step_by(block_rows) {
            let rows = block_rows.min(self.rows - start);
            transpose(
                &self.x[start * self.width..(start + rows) * self.width],
                self.width,
                features,
                chunk_rows,
                &mut columns,
            );
            let (vectors, _) = S::as_simd_f32s(&columns);
            let (chunks, _) = vectors.as_chunks::<CHUNK>();
            let block_scores = &mut self.scores[start * k..(start + rows) * k];
            for tree in self.trees {
                for (chunk, chunk_scores) in chunks
                    .chunks_exact(features.max(1))
                    .zip(block_scores.chunks_mut(chunk_rows * k))
                {
                    let (low_bits, high_bits) = bits.split_at_mut(chunk_rows);
                    surviving::<S, OP, MISSING>(simd, &tree.low, chunk, low_bits);
                    // A tree of 33 leaves or more has a high word even when no test
                    // clears any of its bits (the rightmost leaf is in no true subtree).
                    if tree.leaves() > 32 {
                        surviving::<S, OP, MISSING>(simd, &tree.high, chunk, high_bits);
                    }
                    let exits = low_bits.iter().zip(&*high_bits).map(|(low, high)| {
                        // The exit leaf's bit is never cleared, so one of the words is
                        // non-zero (the high word is only read when the low one is zero).
                        if *low != 0 {
                            low.trailing_zeros() as usize
                        } else {
                            32 + high.trailing_zeros() as usize
                        }
                    });
                    if k == 1 {
                        for (score, exit) in chunk_scores.iter_mut().zip(exits) {
                            *score += tree.weights.get(exit).copied().unwrap_or(0.0);
                        }
                    } else {
                        for (row, exit) in chunk_scores.chunks_exact_mut(k).zip(exits) {
                            let weights = tree.weights.get(exit * k..(exit + 1) * k);
                            for (score, weight) in row.iter_mut().zip(weights.unwrap_or(&[])) {
                                *score += *weight;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Writes the first `features` values of each row of `x` into `columns`, column-major
/// within chunks of `chunk_rows` rows (see `ExitLeaves::run`); the rest of the last chunk
/// is zeros.
fn transpose(x: &[f32], width: usize, features: usize, chunk_rows: usize, columns: &mut [f32]) {
    columns.fill(0.0);
    for (chunk, rows) in x.chunks(chunk_rows * width).enumerate() {
        let base = chunk * features * chunk_rows;
        for (r, row) in rows.chunks_exact(width).enumerate() {
            for (f, value) in row.iter().take(features).enumerate() {
                columns[base + f * chunk_rows + r] = *value;
            }
        }
    }
}

/// The leaf bits each row of one chunk keeps after `tests`, stored row by row in `out`.
#[inline(always)]
fn surviving<S: Simd, const OP: u8, const MISSING: bool>(
    simd: S,
    tests: &[Test],
    chunk: &[[S::f32s; CHUNK]],
    out: &mut [u32],
) {
    let all = simd.splat_u32s(u32::MAX);
    let mut bits = [all; CHUNK];
    for test in tests {
        let Some(values) = chunk.get(test.feature) else {
            continue;
        };
        let threshold = simd.splat_f32s(test.threshold);
        let keep = simd.splat_u32s(test.keep);
        for (word, value) in bits.iter_mut().zip(values) {
            let mut goes_true = compare::<S, OP>(simd, *value, threshold);
            if MISSING && test.missing_true {
                let nan = simd.not_m32s(simd.equal_f32s(*value, *value));
                goes_true = simd.or_m32s(goes_true, nan);
            }
            *word = simd.and_u32s(*word, simd.select_u32s(goes_true, all, keep));
        }
    }
    let (vectors, _) = S::as_mut_simd_u32s(out);
    for (stored, word) in vectors.iter_mut().zip(bits) {
        *stored = word;
    }
}

#[inline(always)]
fn compare<S: Simd, const OP: u8>(simd: S, value: S::f32s, threshold: S::f32s) -> S::m32s {
    match OP {
        LEQ => simd.less_than_or_equal_f32s(value, threshold),
        LT => simd.less_than_f32s(value, threshold),
        GTE => simd.greater_than_or_equal_f32s(value, threshold),
        _ => simd.greater_than_f32s(value, threshold),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree as a list of nodes: a branch `Ok((feature, threshold, missing_true, [false,
    /// true]))` or a leaf's weights.
    type Nodes = Vec<Result<(u32, f32, bool, [u32; 2]), Vec<f32>>>;

    fn bit_tree(nodes: &Nodes, outputs: usize) -> Option<BitTree> {
        BitTree::new(0, outputs, |i| {
            Some(match nodes.get(i as usize)? {
                Ok((feature, threshold, missing_true, next)) => TreeNode::Branch(
                    Split {
                        feature: *feature,
                        threshold: *threshold,
                        missing_true: *missing_true,
                    },
                    *next,
                ),
                Err(weights) => TreeNode::Leaf(weights),
            })
        })
    }

    /// The leaf weights a walk from the root reaches.
    fn walk<'a>(nodes: &'a Nodes, op: Comparison, row: &[f32]) -> &'a [f32] {
        let mut at = 0;
        loop {
            match &nodes[at] {
                Ok((feature, threshold, missing_true, next)) => {
                    let x = row[*feature as usize];
                    let go = match op {
                        Comparison::Leq => x <= *threshold,
                        Comparison::Lt => x < *threshold,
                        Comparison::Gte => x >= *threshold,
                        Comparison::Gt => x > *threshold,
                    } || (x.is_nan() && *missing_true);
                    at = next[usize::from(go)] as usize;
                }
                Err(weights) => return weights,
            }
        }
    }

    /// A random full tree of `leaves` leaves over `width` features (node 0 the root), with
    /// `outputs` random weights a leaf.
    fn random_tree(
        leaves: usize,
        width: u32,
        outputs: usize,
        next: &mut impl FnMut() -> u32,
    ) -> Nodes {
        let weights = |next: &mut dyn FnMut() -> u32| -> Vec<f32> {
            (0..outputs)
                .map(|_| (next() % 20_000) as f32 / 1000.0 - 10.0)
                .collect()
        };
        let mut nodes: Nodes = vec![Err(weights(next))];
        let mut open = vec![0usize];
        while open.len() < leaves {
            let split = open.swap_remove(next() as usize % open.len());
            let (f, t) = (nodes.len(), nodes.len() + 1);
            nodes.push(Err(weights(next)));
            nodes.push(Err(weights(next)));
            let threshold = (next() % 200) as f32 / 10.0 - 10.0;
            let missing_true = next().is_multiple_of(3);
            nodes[split] = Ok((
                next() % width,
                threshold,
                missing_true,
                [f as u32, t as u32],
            ));
            open.extend([f, t]);
        }
        nodes
    }

    fn generator(seed: u32) -> impl FnMut() -> u32 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        }
    }

    #[test]
    fn leaf_weights_are_a_walks_for_every_comparison_size_and_missing_value() {
        let mut next = generator(0x2545_f491);
        let width = 5;
        let rows = 600; // three blocks, the last partial
        let x: Vec<f32> = (0..rows * width)
            .map(|_| match next() % 20 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                // Values on the thresholds' grid, so that equality is exercised.
                n => ((n * 37 + next() % 200) % 200) as f32 / 10.0 - 10.0,
            })
            .collect();
        for (op, outputs) in [
            (Comparison::Leq, 1),
            (Comparison::Lt, 3),
            (Comparison::Gte, 1),
            (Comparison::Gt, 2),
        ] {
            let trees: Vec<Nodes> = [1, 2, 7, 16, 31, 32, 33, 50, 64]
                .iter()
                .map(|leaves| random_tree(*leaves, width as u32, outputs, &mut next))
                .collect();
            let compiled: Vec<BitTree> = trees
                .iter()
                .map(|t| bit_tree(t, outputs).unwrap())
                .collect();
            let mut scores = vec![0.5f32; rows * outputs];
            assert!(add_leaf_weights(
                &compiled,
                op,
                &x,
                width,
                outputs,
                &mut scores
            ));
            // One lane (a CPU with neither AVX2 nor NEON) gives the same sums.
            let mut one_lane = vec![0.5f32; rows * outputs];
            pulp::Scalar::new().vectorize(LeafWeights {
                trees: &compiled,
                comparison: op,
                any_missing_true: true,
                x: &x,
                width,
                rows,
                outputs,
                scores: &mut one_lane,
            });
            assert_eq!(one_lane, scores, "{op:?} on one lane");
            for (r, row) in x.chunks_exact(width).enumerate() {
                let mut want = vec![0.5f32; outputs];
                for tree in &trees {
                    for (sum, weight) in want.iter_mut().zip(walk(tree, op, row)) {
                        *sum += *weight;
                    }
                }
                // The same additions in the same order: equal to the bit.
                assert_eq!(
                    &scores[r * outputs..(r + 1) * outputs],
                    want.as_slice(),
                    "{op:?} row {r}"
                );
            }
        }
    }

    #[test]
    fn large_looping_or_mis_sized_trees_and_short_inputs_are_refused() {
        let mut next = generator(7);
        assert!(bit_tree(&random_tree(65, 3, 1, &mut next), 1).is_none());
        assert!(bit_tree(&random_tree(8, 3, 2, &mut next), 1).is_none());
        assert!(bit_tree(&random_tree(8, 3, 1, &mut next), 0).is_none());
        let looping: Nodes = vec![Ok((0, 1.0, false, [1, 0])), Err(vec![1.0])];
        assert!(bit_tree(&looping, 1).is_none());
        let tree = bit_tree(&random_tree(8, 3, 1, &mut next), 1).unwrap();
        assert!(tree.width() <= 3);
        let reads_feature_9: Nodes =
            vec![Ok((9, 0.0, false, [1, 2])), Err(vec![1.0]), Err(vec![2.0])];
        let wide = [tree.clone(), bit_tree(&reads_feature_9, 1).unwrap()];
        let mut scores = [0.0; 10];
        assert!(!add_leaf_weights(
            &wide,
            Comparison::Leq,
            &[0.0; 30],
            3,
            1,
            &mut scores
        ));
        assert!(!add_leaf_weights(
            &wide[..1],
            Comparison::Leq,
            &[0.0; 29],
            3,
            1,
            &mut scores
        ));
        assert!(!add_leaf_weights(
            &wide[..1],
            Comparison::Leq,
            &[0.0; 30],
            3,
            2,
            &mut scores
        ));
        assert_eq!(scores, [0.0; 10]);
        assert!(add_leaf_weights(
            &wide[..1],
            Comparison::Leq,
            &[0.0; 30],
            3,
            1,
            &mut scores
        ));
    }
}
