//! A bounded fuzz run over the two front doors a client reaches: SQL statements (parsed,
//! checked, planned and run as a client's, in one process with every shoal function) and
//! pipeline files (parsed and compiled). Inputs mix token soup, nesting of every shape far
//! past the limits, shoal's functions with extreme parameters, and mutated example
//! pipelines. Each must come back as a result or an error: no panic, no abort (a stack
//! overflow would kill this process), and the process's peak memory stays bounded.
//!
//! Deterministic in CI (a fixed seed, about a minute); `SHOAL_FUZZ_SECONDS=600
//! SHOAL_FUZZ_SEED=7` explores longer and elsewhere.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use shoal_planner::pipeline::{Mode, compile_file};
use shoal_sql::statement::{StatementLimits, client_options};
use shoal_sql::{ShoalStatement, with_shoal_functions};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Peak resident memory the whole run may reach.
const MAX_PEAK_RSS_BYTES: u64 = 3 << 30;

fn budget() -> Duration {
    let seconds = std::env::var("SHOAL_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    Duration::from_secs(seconds)
}

fn runner() -> TestRunner {
    let seed: u64 = std::env::var("SHOAL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &key),
    )
}

const WORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "LIMIT",
    "AS",
    "AND",
    "OR",
    "NOT",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "IN",
    "(",
    ")",
    ",",
    "+",
    "-",
    "*",
    "/",
    "%",
    "=",
    "<",
    ">",
    "'x'",
    "''",
    "1",
    "0",
    "-1",
    "1e308",
    "9223372036854775807",
    "NULL",
    "a",
    "b",
    "s",
    "t",
    "lineitem",
    "predict",
    "predict_proba",
    "hashed_ngrams",
    "one_hot",
    "hash_bucket",
    "regex_extract",
    "bucketize",
    "__shoal_fedavg_round",
    "evaluate",
    "compare_models",
    "site",
    "count",
    "sum",
    "avg",
    "EXPLAIN",
    "CREATE",
    "MODEL",
    "TRAIN",
    "PREDICTING",
    "OPTIONS",
    "SHOW",
    "MODELS",
    "UNION",
    "ALL",
    "WITH",
    "JOIN",
    "ON",
    "?",
    "$1",
    ";",
    "COPY",
    "SET",
    "\u{1F980}",
    "\"quoted\"",
    "generate_series",
    "unnest",
    "array_repeat",
    "repeat",
    "10000000",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 0..120).prop_map(|w| w.join(" "))
}

/// Nesting of one shape, `depth` deep (0..4000: far past the default limit of 500).
fn deep() -> impl Strategy<Value = String> {
    (0usize..8, 1usize..4000).prop_map(|(shape, n)| match shape {
        0 => format!("SELECT {}", vec!["a"; n].join(" + ")),
        1 => format!(
            "SELECT count(*) FROM t WHERE {}",
            vec!["a = 1"; n].join(" OR ")
        ),
        2 => format!("SELECT {}a{} FROM t", "abs(".repeat(n), ")".repeat(n)),
        3 => format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
        4 => format!(
            "SELECT {}1{}",
            "(SELECT ".repeat(n.min(200)),
            ")".repeat(n.min(200))
        ),
        5 => format!("SELECT {}", vec!["NOT"; n].join(" ") + " true"),
        6 => format!(
            "SELECT {} 1 {}",
            "CASE WHEN true THEN".repeat(n.min(800)),
            "END".repeat(n.min(800))
        ),
        _ => format!(
            "SELECT a FROM t WHERE a IN ({})",
            (0..n * 10)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    })
}

/// shoal's functions with extreme parameters.
fn kernels() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("1e300".to_string()),
        Just("10000000".to_string()),
        Just("16384".to_string()),
        Just("NULL".to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
    ];
    (0usize..6, number.clone(), number).prop_map(|(f, x, y)| match f {
        0 => format!("SELECT count(hashed_ngrams(s, {x}, {y})) FROM t"),
        1 => format!("SELECT hash_bucket(s, {x}) FROM t"),
        2 => format!("SELECT one_hot(s, {}) FROM t", vec!["'w'"; 20_000.min(1 + x.len() * 4000)].join(",")),
        3 => format!("SELECT bucketize(b, {x}, {y}) FROM t"),
        4 => format!("SELECT regex_extract(s, '(a+)+{x}', {y}) FROM t"),
        _ => format!("SELECT count(hashed_ngrams(CAST(value AS VARCHAR), {x}, {y})) FROM generate_series(1, 20000)"),
    })
}

fn any_sql() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => token_soup(),
        1 => deep(),
        2 => kernels(),
        2 => prop::collection::vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect()),
    ]
}

fn context() -> SessionContext {
    let provider = Arc::new(shoal_operators::model::DirectoryModels::default());
    let state = with_shoal_functions(
        SessionStateBuilder::new()
            .with_default_features()
            .with_config(
                SessionConfig::new()
                    .with_option_extension(shoal_operators::runtime::session_options()),
            ),
        provider,
    )
    .build();
    let ctx = SessionContext::new_with_state(state);
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
            Arc::new(Float64Array::from(vec![Some(0.5), Some(-2.0), None])),
            Arc::new(StringArray::from(vec![Some("a b c"), None, Some("aaaa")])),
        ],
    )
    .unwrap();
    let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    ctx
}

/// Parses, plans and runs `sql` as a client's statement: any outcome but a panic is fine.
async fn run_sql(ctx: &SessionContext, sql: &str) {
    let Ok(statement) = ShoalStatement::parse(sql) else {
        return;
    };
    let Ok(Some(frame)) = statement.dataframe(ctx, client_options()).await else {
        return;
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), frame.collect()).await;
}

fn pipelines() -> Vec<String> {
    let dir = shoal_tests::repo_root().join("examples/pipelines");
    let mut texts: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    texts.sort();
    texts
}

/// A mutated pipeline file: bytes flipped, cut, repeated, or nesting spliced in.
fn mutated(base: Vec<String>) -> impl Strategy<Value = String> {
    (
        prop::sample::select(base),
        0usize..5,
        any::<usize>(),
        1usize..5000,
    )
        .prop_map(|(text, how, at, n)| {
            let mut bytes = text.into_bytes();
            let at = at % bytes.len().max(1);
            match how {
                0 => bytes.truncate(at),
                1 => bytes[at] ^= 0x20,
                2 => {
                    let copy = bytes[..at].to_vec();
                    bytes.extend(copy);
                }
                3 => {
                    let nest = format!("\nx = {}1{}\n", "[".repeat(n), "]".repeat(n));
                    bytes.splice(at..at, nest.bytes());
                }
                _ => {
                    let expr = format!("{}1{}", "(".repeat(n), ")".repeat(n));
                    let text = String::from_utf8_lossy(&bytes).replace("l_quantity", &expr);
                    bytes = text.into_bytes();
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

/// Runs `body` on a thread with the stack the coordinator gives its threads, as the
/// coordinator runs statements.
fn on_coordinator_stack(body: impl FnOnce() + Send + 'static) {
    let stack = StatementLimits::default().thread_stack_bytes();
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(stack)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move { tokio::task::block_in_place(body) });
        })
        .unwrap()
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Draws inputs from `strategy` until `budget` has passed, handing each to `case`; a panic
/// is reported with the input that caused it. Returns the number of cases run.
fn fuzz<S: Strategy>(strategy: S, budget: Duration, case: impl Fn(&S::Value)) -> u64
where
    S::Value: std::fmt::Debug,
{
    use proptest::strategy::ValueTree;
    let mut runner = runner();
    let deadline = Instant::now() + budget;
    let mut cases = 0;
    while Instant::now() < deadline {
        let input = strategy.new_tree(&mut runner).unwrap().current();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&input)));
        if let Err(panic) = outcome {
            let mut shown = format!("{input:?}");
            shown.truncate(2000);
            eprintln!("fuzz case {cases} panicked on input: {shown}");
            std::panic::resume_unwind(panic);
        }
        cases += 1;
    }
    cases
}

#[test]
fn sql_and_pipelines_from_clients_never_panic_abort_or_grow_without_bound() {
    on_coordinator_stack(|| {
        let handle = tokio::runtime::Handle::current();
        let ctx = context();
        let sql_cases = fuzz(any_sql(), budget(), |sql| {
            handle.block_on(run_sql(&ctx, sql))
        });
        let pipeline_cases = fuzz(mutated(pipelines()), budget() / 2, |text| {
            let _ = handle.block_on(compile_file(
                text,
                "fuzzed.toml",
                &[],
                &ctx,
                &Mode::Validate,
            ));
        });
        let peak = peak_rss_bytes();
        println!(
            "FIGURE fuzz: {sql_cases} statements, {pipeline_cases} pipeline files, peak RSS {} MiB",
            peak >> 20
        );
        assert!(sql_cases > 100 && pipeline_cases > 20);
        assert!(peak < MAX_PEAK_RSS_BYTES, "peak memory {peak} bytes");
    });
}
