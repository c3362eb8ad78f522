"""Daft and Ray Data on shoal's image bench job (see benches/end_to_end/images.rs, which
starts this script once per engine and samples the memory of its whole process tree).

    python benches/images.py ENGINE --data DIR --model FILE --runs 3

ENGINE: daft | ray

DIR holds site-<i>/photos/**/*.jpg. Each engine decodes every JPEG with its own image
operations, resizes it to 224 x 224, normalises it with ImageNet's mean and std into NCHW
float32 and classifies it with the same ONNX model and onnxruntime version as shoal, one
model call per batch, two model instances of one thread each (shoal runs one per core).
Prints one JSON line: the seconds of each run and the last run's top class per file, keyed
by the file's path below `photos/`. Engine start-up happens before the timed runs.
"""

import argparse
import glob
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
BATCH = 64


def session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def top_class(sess, pixels):
    """Top class per image of a uint8 batch [N, 224, 224, 3]."""
    x = (pixels.astype(np.float32).transpose(0, 3, 1, 2) / 255.0 - MEAN) / STD
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return logits.argmax(axis=1).astype(np.int32)


def below_photos(path):
    return path.split("/photos/", 1)[1]


def files_of(data):
    return sorted(glob.glob(os.path.join(data, "site-*", "photos", "**", "*.jpg"),
                            recursive=True))


# ---------------------------------------------------------------- Daft

def daft_engine(args):
    import daft
    from daft import col
    from daft.functions import decode_image, download, image_to_tensor, resize

    daft.set_runner_native(num_threads=2)
    model = args.model

    @daft.cls
    class Classifier:
        def __init__(self):
            self.sess = session(model)

        @daft.method.batch(return_dtype=daft.DataType.int32())
        def __call__(self, images):
            pixels = images.to_arrow().to_numpy_ndarray()
            return top_class(self.sess, pixels)

    classifier = Classifier()
    pattern = os.path.join(os.path.abspath(args.data), "site-*", "photos", "**", "*.jpg")

    def run():
        df = daft.from_glob_path(pattern)
        df = df.with_column("image", image_to_tensor(resize(
            decode_image(download(col("path")), mode="RGB"), 224, 224)))
        df = df.select(col("path"), classifier(col("image")).alias("label"))
        table = df.to_arrow()
        return {below_photos(p): int(c) for p, c in zip(
            table["path"].to_pylist(), table["label"].to_pylist())}

    return run


# ---------------------------------------------------------------- Ray Data

def ray_engine(args):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    files = files_of(args.data)
    model = args.model

    class Classifier:
        def __init__(self):
            self.sess = session(model)

        def __call__(self, batch):
            return {"path": batch["path"], "label": top_class(self.sess, batch["image"])}

    def run():
        ds = ray.data.read_images(files, size=(224, 224), mode="RGB", include_paths=True)
        # Two model actors at half a CPU each, leaving room for the decoding read tasks.
        ds = ds.map_batches(Classifier, batch_size=BATCH, batch_format="numpy", num_cpus=0.5,
                            compute=ray.data.ActorPoolStrategy(size=2))
        return {below_photos(r["path"]): int(r["label"]) for r in ds.take_all()}

    return run


ENGINES = {"daft": daft_engine, "ray": ray_engine}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("engine", choices=sorted(ENGINES))
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    run = ENGINES[args.engine](args)
    times, answer = [], None
    for _ in range(args.runs):
        started = time.perf_counter()
        answer = run()
        times.append(time.perf_counter() - started)
    print(json.dumps({"engine": args.engine, "times": times, "answer": answer}))
    sys.stdout.flush()
    os._exit(0)  # Ray and Daft leave threads behind; the answer is out.


if __name__ == "__main__":
    main()
