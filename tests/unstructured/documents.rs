//! Documents where they lie: reviews stored as text files on two sites, tokenized by the
//! tokenizer their model carries and classified there, in one process and on a cluster.
//!
//! The tokenizer, the model and the answers come from `tests/data/make_text_models.py`
//! (committed): Hugging Face's Python `tokenizers` gave the ids, onnxruntime in Python the
//! probabilities, and the model is built so each review's label is known.

use shoal_engine::protocol::PipelineMode;
use shoal_operators::model::DirectoryModels;
use shoal_tests::{
    ROWS_LEAVE, assert_same_rows, pipeline_rows, repo_root, run_pipeline, sites_cluster, to_rows,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(serde::Deserialize)]
struct Review {
    text: String,
    positive: bool,
    p_positive: f64,
}

const MODEL: &str = "review_sentiment";
/// A review as the model takes it: at most 64 tokens, padded.
const TOKENS: &str = "tokenize(content, 'review_sentiment', 64)";
/// Reviews per document of the `documents` table (one label each).
const PER_DOCUMENT: usize = 6;

fn reviews() -> Vec<Review> {
    std::fs::read_to_string(repo_root().join("tests/data/text/reviews.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn label(positive: bool) -> &'static str {
    if positive { "positive" } else { "negative" }
}

/// Two sites of `reviews/<label>/<n>.txt` (one review a file, half of each label on each site) and
/// `documents/<label>/<n>.md` (six reviews a file); a models folder with the classifier,
/// its tokenizer, and a model that has none.
fn sites(dir: &Path, reviews: &[Review]) -> Vec<PathBuf> {
    let sites: Vec<PathBuf> = (1..=2).map(|i| dir.join(format!("site-{i}"))).collect();
    let write = |path: PathBuf, text: &[u8]| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    for (i, r) in reviews.iter().enumerate() {
        let file = format!("reviews/{}/{i:03}.txt", label(r.positive));
        // Labels alternate: pairs alternate between the sites, so each holds both.
        write(sites[(i / 2) % 2].join(file), r.text.as_bytes());
    }
    // Bytes that are not UTF-8: a null, not a failed statement.
    write(
        sites[0].join("reviews/negative/latin1.txt"),
        b"caf\xe9 awful",
    );
    for positive in [true, false] {
        let texts: Vec<&str> = reviews
            .iter()
            .filter(|r| r.positive == positive)
            .map(|r| r.text.as_str())
            .collect();
        for (n, doc) in texts.chunks(PER_DOCUMENT).enumerate() {
            let file = format!("documents/{}/{n:02}.md", label(positive));
            write(sites[n % 2].join(file), doc.join("\n\n").as_bytes());
        }
    }
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let text_models = repo_root().join("tests/data/text/models");
    for file in ["review_sentiment.onnx", "review_sentiment.tokenizer.json"] {
        std::fs::copy(text_models.join(file), models.join(file)).unwrap();
    }
    std::fs::copy(
        repo_root().join("tests/data/models/return_risk.onnx"),
        models.join("return_risk.onnx"),
    )
    .unwrap();
    sites
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_on_two_sites_are_tokenized_and_classified_where_they_lie() {
    let dir = tempfile::tempdir().unwrap();
    let reviews = reviews();
    let sites = sites(dir.path(), &reviews);
    let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
    let provider = Arc::new(DirectoryModels::load(&dir.path().join("models")).unwrap());
    let ctx = shoal_sql::local_context(&dirs, provider).await.unwrap();

    // One process: each review's probability is onnxruntime's in Python on Python's ids.
    let sql = format!(
        "SELECT path, predict_proba('{MODEL}', {TOKENS}) AS p, predict('{MODEL}', {TOKENS}) \
         AS label FROM reviews"
    );
    let rows = to_rows(&ctx.sql(&sql).await.unwrap().collect().await.unwrap());
    assert_eq!(rows.len(), reviews.len() + 1);
    for row in &rows {
        if row[0].ends_with("latin1.txt") {
            assert_eq!(row[1..], ["NULL", "NULL"], "not UTF-8: no tokens, no score");
            continue;
        }
        let i: usize = row[0].rsplit('/').next().unwrap()[..3].parse().unwrap();
        let review = &reviews[i];
        let p: f64 = row[1].parse().unwrap();
        assert!(
            (p - review.p_positive).abs() < 1e-5,
            "{row:?}: {}",
            review.p_positive
        );
        assert_eq!(row[2], if review.positive { "1" } else { "0" }, "{row:?}");
        assert!(row[0].starts_with(&format!("{}/", label(review.positive))));
    }

    let why = "SELECT path, text_error(content) FROM reviews WHERE text_error(content) IS NOT NULL";
    let why = to_rows(&ctx.sql(why).await.unwrap().collect().await.unwrap());
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(
        why[0][0].ends_with("latin1.txt") && why[0][1].starts_with("not UTF-8 text"),
        "{why:?}"
    );

    // The cluster, under the sites' default policy: counts per folder leave the sites.
    let models = dir.path().join("models");
    let cluster = sites_cluster(&models, &sites, None).await;
    let counts = format!(
        "SELECT split_part(path, '/', 1) AS folder, count(*) AS files, \
         sum(predict('{MODEL}', {TOKENS})) AS said_positive FROM reviews GROUP BY 1 ORDER BY 1"
    );
    let out = cluster.sql(&counts).await.unwrap();
    assert!(out.report.distributed, "classified on the sites");
    let expected = to_rows(&ctx.sql(&counts).await.unwrap().collect().await.unwrap());
    assert_same_rows(&counts, &expected, &to_rows(&out.batches));
    let half = (reviews.len() / 2).to_string();
    let files = (reviews.len() / 2 + 1).to_string();
    assert_eq!(
        expected,
        [
            ["negative".to_string(), files, "0".into()],
            ["positive".into(), half.clone(), half]
        ]
    );

    // Raw text does not leave; a model without a tokenizer, and bad lengths, are refused
    // while planning, naming what is wrong.
    let err = cluster
        .sql("SELECT unnest(text_chunks(content, 'review_sentiment', 30, 6)) FROM documents")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refuses: table 'documents'"), "{err}");
    for (sql, says) in [
        (
            "SELECT tokenize(content, 'return_risk', 8) FROM reviews",
            "model 'return_risk' has no tokenizer",
        ),
        (
            "SELECT count(tokenize(content, 'review_sentiment', 0)) FROM reviews",
            "max_tokens must be a whole number from 1",
        ),
        (
            "SELECT count(text_chunks(content, 'review_sentiment', 8, 8)) FROM reviews",
            "overlap must be a whole number from 0 to 7",
        ),
        (
            "SELECT sum(predict('return_risk', tokenize(content, 'review_sentiment', 8))) \
             FROM reviews",
            "has no field",
        ),
    ] {
        let err = cluster.sql(sql).await.unwrap_err().to_string();
        assert!(err.contains(says), "{sql}: {err}");
    }

    // Long documents in chunks of 30 tokens sharing 6, each scored; per folder, the share
    // of chunks said positive and the documents' mean.
    let chunks = format!(
        "SELECT split_part(path, '/', 1) AS folder, count(*) AS chunks, \
         sum(CAST(p > 0.5 AS INT)) AS said_positive, round(avg(p), 6) AS mean_p FROM ( \
           SELECT path, predict_proba('{MODEL}', tokenize(chunk, '{MODEL}', 32)) AS p FROM ( \
             SELECT path, unnest(text_chunks(content, '{MODEL}', 30, 6)) AS chunk \
             FROM documents)) GROUP BY 1 ORDER BY 1"
    );
    let expected = to_rows(&ctx.sql(&chunks).await.unwrap().collect().await.unwrap());
    // The default policy cannot count a site's documents per group once they are cut in
    // pieces (an aggregate over an unnest), so it refuses; a site that lets rows leave runs
    // it.
    let err = cluster.sql(&chunks).await.unwrap_err().to_string();
    assert!(err.contains("over a join, union or unnest"), "{err}");
    cluster.stop().await;
    let cluster = sites_cluster(&models, &sites, Some(ROWS_LEAVE)).await;
    let out = cluster.sql(&chunks).await.unwrap();
    assert!(
        out.report.distributed,
        "chunked and classified on the sites"
    );
    assert_same_rows(&chunks, &expected, &to_rows(&out.batches));
    eprintln!("chunks per folder (folder, chunks, said positive, mean p): {expected:?}");
    let documents = (reviews.len() / 2).div_ceil(PER_DOCUMENT);
    for (row, positive) in expected.iter().zip([false, true]) {
        let chunks: usize = row[1].parse().unwrap();
        let said_positive: usize = row[2].parse().unwrap();
        assert!(
            chunks > 2 * documents,
            "documents are cut in pieces: {row:?}"
        );
        let right = if positive {
            said_positive
        } else {
            chunks - said_positive
        };
        assert!(
            right * 10 >= chunks * 8,
            "most chunks tell the label: {row:?}"
        );
        let mean: f64 = row[3].parse().unwrap();
        assert_eq!(mean > 0.5, positive, "{row:?}");
    }

    // A pipeline: the `tokenize` op, then the model node fed its struct column.
    let events = run_pipeline(&cluster, "reviews", PIPELINE, PipelineMode::Run, Some("r1"))
        .await
        .unwrap();
    let counts = to_rows(&pipeline_rows(&events));
    let sql = format!(
        "SELECT site() AS site, predict('{MODEL}', {TOKENS}) AS label, count(*) AS reviews \
         FROM reviews GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let expected = to_rows(&cluster.sql(&sql).await.unwrap().batches);
    assert_same_rows("reviews pipeline", &expected, &counts);
    assert_eq!(
        counts.len(),
        5,
        "two labels a site, and the file that is not UTF-8: {counts:?}"
    );
    cluster.stop().await;
}

const PIPELINE: &str = r#"
[source.reviews]
table = "reviews"
columns = ["path", "content"]

[features.tokens]
input = "reviews"
keep = ["path"]
ops = [{ op = "tokenize", column = "content", model = "review_sentiment", max_tokens = 64, output = "tokens" }]

[model.sentiment]
input = "tokens"
model = "review_sentiment"
features = ["tokens"]
predict = "label"

[features.labelled]
input = "sentiment"
keep = ["label"]
columns = { site = "site()" }

[aggregate.by_site]
input = "labelled"
group_by = ["site", "label"]
values = { reviews = "count(*)" }
order_by = ["site", "label"]

[sink.counts]
input = "by_site"
kind = "client"
"#;
