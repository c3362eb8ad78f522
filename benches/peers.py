"""The engines a user would pick instead of shoal, running shoal's bench jobs (see
benches/end_to_end.rs, which starts this script once per engine and job and samples the
memory of its whole process tree).

    python benches/peers.py ENGINE JOB --data DIR --model FILE --runs 3 [--since DATE] [--out DIR]

ENGINE: duckdb | datafusion | daft | ray
JOB:    aggregate    count(*) and avg(P(positive)) per l_returnflag over rows shipped since DATE
        predictions  (l_orderkey, l_linenumber, P(positive)) for every row, written as Parquet

DIR holds lineitem's Parquet files (any depth). Prints one JSON line: the engine, the job, the
seconds of each run and the last run's answer (per flag [count, avg], or rows and the sum of
the predictions) for the harness to compare across engines. Each engine runs the same ONNX
model with the same onnxruntime version; the model is called once per Arrow batch, never per
row. Engine start-up (a Ray cluster, a session) happens before the timed runs.
"""

import argparse
import datetime
import glob
import json
import os
import shutil
import sys
import time

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FEATURES = ["l_quantity", "l_extendedprice", "l_discount", "l_tax"]
BATCH_ROWS = 8192


def session(model, threads=0):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def positive_probability(sess, columns):
    """P(positive) for one batch: columns are Arrow arrays of the four features."""
    x = np.stack([pc.cast(c, pa.float64()).to_numpy(zero_copy_only=False) for c in columns],
                 axis=1).astype(np.float32)
    outputs = sess.run(None, {sess.get_inputs()[0].name: x})
    return outputs[1][:, 1]


class GroupMeans:
    """count and sum per flag, accumulated batch by batch with numpy."""

    def __init__(self):
        self.count, self.total = {}, {}

    def add(self, flags, p):
        encoded = pc.dictionary_encode(flags).combine_chunks() if isinstance(
            flags, pa.ChunkedArray) else pc.dictionary_encode(flags)
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        names = encoded.dictionary.to_pylist()
        counts = np.bincount(codes, minlength=len(names))
        sums = np.bincount(codes, weights=p.astype(np.float64), minlength=len(names))
        for i, name in enumerate(names):
            self.count[name] = self.count.get(name, 0) + int(counts[i])
            self.total[name] = self.total.get(name, 0.0) + float(sums[i])

    def answer(self):
        return {k: [self.count[k], self.total[k] / self.count[k]] for k in sorted(self.count)}


def files_of(data):
    return sorted(glob.glob(os.path.join(data, "**", "*.parquet"), recursive=True))


# ---------------------------------------------------------------- DuckDB

def duckdb_engine(args):
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    sess = session(args.model)
    files = files_of(args.data)
    source = f"read_parquet({files!r})"

    def aggregate():
        query = (f"SELECT l_returnflag, {', '.join(FEATURES)} FROM {source} "
                 f"WHERE l_shipdate >= DATE '{args.since}'")
        groups = GroupMeans()
        for batch in con.execute(query).to_arrow_reader(BATCH_ROWS):
            groups.add(batch.column(0), positive_probability(sess, batch.columns[1:]))
        return groups.answer()

    def predictions(out):
        query = f"SELECT l_orderkey, l_linenumber, {', '.join(FEATURES)} FROM {source}"
        writer = None
        for batch in con.execute(query).to_arrow_reader(BATCH_ROWS):
            p = positive_probability(sess, batch.columns[2:])
            table = pa.table({"l_orderkey": batch.column(0), "l_linenumber": batch.column(1),
                              "p": pa.array(p)})
            if writer is None:
                writer = pq.ParquetWriter(os.path.join(out, "part-0.parquet"), table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()

    return aggregate, predictions


# ---------------------------------------------------------------- DataFusion-python

def datafusion_engine(args):
    import datafusion

    ctx = datafusion.SessionContext(datafusion.SessionConfig().with_target_partitions(2))
    # One listing folder: links to every file, wherever they sit under --data.
    flat = os.path.join(args.out, "datafusion-input")
    shutil.rmtree(flat, ignore_errors=True)
    os.makedirs(flat)
    for i, path in enumerate(files_of(args.data)):
        os.symlink(os.path.abspath(path), os.path.join(flat, f"{i}.parquet"))
    ctx.register_parquet("lineitem", flat, file_extension=".parquet")
    sess = session(args.model)

    def predict(q, p, d, t):
        return pa.array(positive_probability(sess, [q, p, d, t]))

    ctx.register_udf(datafusion.udf(predict, [pa.float64()] * 4, pa.float32(), "stable",
                                    name="predict_positive"))
    call = "predict_positive(" + ", ".join(f"CAST({f} AS DOUBLE)" for f in FEATURES) + ")"

    def aggregate():
        batches = ctx.sql(
            f"SELECT l_returnflag, count(*) AS n, avg({call}) AS p FROM lineitem "
            f"WHERE l_shipdate >= DATE '{args.since}' GROUP BY l_returnflag").collect()
        table = pa.Table.from_batches(batches)
        return {str(f): [int(n), float(p)] for f, n, p in zip(
            table["l_returnflag"].to_pylist(), table["n"].to_pylist(), table["p"].to_pylist())}

    def predictions(out):
        df = ctx.sql(f"SELECT l_orderkey, l_linenumber, {call} AS p FROM lineitem")
        df.write_parquet(out)

    return aggregate, predictions


# ---------------------------------------------------------------- Daft

def daft_engine(args):
    import daft
    from daft import col

    daft.set_runner_native(num_threads=2)
    files = files_of(args.data)
    model = args.model

    @daft.cls
    class Predictor:
        def __init__(self):
            self.sess = session(model, threads=1)

        @daft.method.batch(return_dtype=daft.DataType.float32())
        def __call__(self, q, p, d, t):
            columns = [s.to_arrow() for s in (q, p, d, t)]
            return pa.array(positive_probability(self.sess, columns))

    predictor = Predictor()

    def scored(df):
        return predictor(*[col(f) for f in FEATURES])

    def aggregate():
        df = daft.read_parquet(files)
        since = datetime.date.fromisoformat(args.since)
        df = df.where(col("l_shipdate") >= daft.lit(since))
        df = df.with_column("p", scored(df))
        df = df.groupby("l_returnflag").agg(col("p").count().alias("n"), col("p").mean().alias("p"))
        table = df.to_arrow()
        return {str(f): [int(n), float(p)] for f, n, p in zip(
            table["l_returnflag"].to_pylist(), table["n"].to_pylist(), table["p"].to_pylist())}

    def predictions(out):
        df = daft.read_parquet(files)
        df = df.select(col("l_orderkey"), col("l_linenumber"), scored(df).alias("p"))
        df.write_parquet(out)

    return aggregate, predictions


# ---------------------------------------------------------------- Ray Data

def ray_engine(args):
    import ray
    from ray.data.aggregate import Count, Mean

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    files = files_of(args.data)
    model, since = args.model, datetime.date.fromisoformat(args.since)

    # Two model actors on two CPUs; at one CPU each they would leave none to the read tasks
    # and the pipeline would stall.
    actors = dict(batch_size=BATCH_ROWS, batch_format="pyarrow", num_cpus=0.5,
                  compute=ray.data.ActorPoolStrategy(size=2))

    class Predictor:
        def __init__(self, keep, filtered):
            self.sess = session(model, threads=1)
            self.keep, self.filtered = keep, filtered

        def __call__(self, table):
            if self.filtered:
                table = table.filter(pc.greater_equal(table["l_shipdate"], pa.scalar(since)))
            p = positive_probability(self.sess, [table[f] for f in FEATURES])
            return pa.table({**{k: table[k] for k in self.keep}, "p": pa.array(p)})

    def aggregate():
        ds = ray.data.read_parquet(files).select_columns(["l_returnflag", "l_shipdate"] + FEATURES)
        ds = ds.map_batches(Predictor, fn_constructor_args=(["l_returnflag"], True), **actors)
        rows = ds.groupby("l_returnflag").aggregate(Count(), Mean("p")).take_all()
        return {str(r["l_returnflag"]): [int(r["count()"]), float(r["mean(p)"])] for r in rows}

    def predictions(out):
        ds = ray.data.read_parquet(files).select_columns(["l_orderkey", "l_linenumber"] + FEATURES)
        ds = ds.map_batches(Predictor, fn_constructor_args=(["l_orderkey", "l_linenumber"], False),
                            **actors)
        ds.write_parquet(out)

    return aggregate, predictions


def summarize(out):
    """Rows and the sum of `p` over the Parquet files an engine wrote (after the timing)."""
    rows, total = 0, 0.0
    for path in files_of(out):
        column = pq.read_table(path, columns=["p"])["p"]
        rows += len(column)
        total += float(pc.sum(pc.cast(column, pa.float64())).as_py() or 0.0)
    return {"rows": rows, "sum": total}


ENGINES = {"duckdb": duckdb_engine, "datafusion": datafusion_engine, "daft": daft_engine,
           "ray": ray_engine}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("engine", choices=sorted(ENGINES))
    parser.add_argument("job", choices=["aggregate", "predictions"])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--since", default="1992-01-01")
    parser.add_argument("--out", default="target/shoal-bench-out")
    args = parser.parse_args()
    aggregate, predictions = ENGINES[args.engine](args)
    times, answer = [], None
    for run in range(args.runs):
        out = os.path.join(args.out, args.engine, f"run-{run}")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out, exist_ok=True)
        started = time.perf_counter()
        answer = aggregate() if args.job == "aggregate" else predictions(out)
        times.append(time.perf_counter() - started)
        if args.job == "predictions":
            answer = summarize(out)
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"engine": args.engine, "job": args.job, "times": times, "answer": answer}))
    sys.stdout.flush()
    os._exit(0)  # Ray and Daft leave threads behind; the answer is out.


if __name__ == "__main__":
    main()
