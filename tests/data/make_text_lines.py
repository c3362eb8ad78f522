"""Text-line images, half of them upside down, for the text-direction test
(tests/unstructured.rs), with the answers of RapidOCR's own Python pipeline on them.

Run:  .venv/bin/python tests/data/make_text_lines.py OUT [--sites 2] [--per-site 40]

Writes, deterministically (fixed seed):
  OUT/site-<i>/lines/part-0.parquet   path, format, rotated (the truth), wheel_180 (what the
                                      wheel's classifier says), content (the file's bytes)
  OUT/site-<i>/line_files/<upright|rotated>/<i>-<n>.<png|jpg>
                                      the same images as files: a files table whose folders
                                      are the truth
  OUT/models/text_direction.onnx      the classifier of the rapidocr-onnxruntime wheel
                                      (ch_ppocr_mobile_v2.0_cls_infer.onnx, 0 vs 180 degrees),
                                      copied from the installed package: nothing downloads

Lines are rendered with the DejaVu fonts of Debian's fonts-dejavu-core package in several
faces, sizes, colours and margins, as PNG and JPEG, at most 4 times as wide as tall (the
classifier's 48 x 192 input): wider lines are squashed by RapidOCR but padded by shoal's
'pad' fit, which would compare two different inputs.
"""

import argparse
import io
import pathlib
import random
import shutil
import sys

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rapidocr_onnxruntime
from PIL import Image, ImageDraw, ImageFont
from rapidocr_onnxruntime.ch_ppocr_cls.text_cls import TextClassifier
from rapidocr_onnxruntime.utils import read_yaml

FONT_DIR = pathlib.Path("/usr/share/fonts/truetype/dejavu")
FACES = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
         "DejaVuSerif-Bold.ttf", "DejaVuSansCondensed.ttf"]
WORDS = ("invoice total amount patient record scan date number page report ward sample "
         "batch result north south station level order shipped returned pending 2026 "
         "42 17.50 EUR kg ml Room Dr. ID").split()


def render(rng):
    font = ImageFont.truetype(str(FONT_DIR / rng.choice(FACES)), rng.randint(22, 44))
    ink = tuple(rng.randint(0, 70) for _ in range(3))
    paper = tuple(rng.randint(215, 255) for _ in range(3))
    margin = rng.randint(3, 12)
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
    while True:
        text = " ".join(words)
        left, top, right, bottom = font.getbbox(text)
        width, height = right - left + 2 * margin, bottom - top + 2 * margin
        if width <= 4 * height or len(words) == 1:
            break
        words.pop()
    image = Image.new("RGB", (width, height), paper)
    ImageDraw.Draw(image).text((margin - left, margin - top), text, font=font, fill=ink)
    return image


def encode(image, fmt):
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, "JPEG", quality=90)
    else:
        image.save(out, "PNG")
    return out.getvalue()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--per-site", type=int, default=40)
    args = parser.parse_args()
    missing = [f for f in FACES if not (FONT_DIR / f).exists()]
    if missing:
        sys.exit(f"fonts missing under {FONT_DIR}: {missing} (Debian package fonts-dejavu-core)")

    package = pathlib.Path(rapidocr_onnxruntime.__file__).parent
    config = read_yaml(str(package / "config.yaml"))["Cls"]
    config["model_path"] = str(package / config["model_path"])
    classifier = TextClassifier(config)
    models = args.out / "models"
    models.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config["model_path"], models / "text_direction.onnx")

    rng = random.Random(18)
    for site in range(1, args.sites + 1):
        rows = {"path": [], "format": [], "rotated": [], "wheel_180": [], "content": []}
        for i in range(args.per_site):
            image = render(rng)
            rotated = i % 2 == 1
            if rotated:
                image = image.rotate(180)
            fmt = "jpeg" if i % 3 == 0 else "png"
            content = encode(image, fmt)
            # The wheel's own pipeline, as RapidOCR runs it: OpenCV decodes the file (BGR).
            decoded = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_COLOR)
            _, [(label, _score)], _ = classifier([decoded])
            extension = "jpg" if fmt == "jpeg" else "png"
            rows["path"].append(f"lines/{site}/{i:03}.{extension}")
            as_file = args.out / f"site-{site}" / "line_files"
            as_file = as_file / ("rotated" if rotated else "upright") / f"{site}-{i:03}.{extension}"
            as_file.parent.mkdir(parents=True, exist_ok=True)
            as_file.write_bytes(content)
            rows["format"].append(fmt)
            rows["rotated"].append(rotated)
            rows["wheel_180"].append(label == "180")
            rows["content"].append(content)
        table = pa.table({
            "path": pa.array(rows["path"], pa.string()),
            "format": pa.array(rows["format"], pa.string()),
            "rotated": pa.array(rows["rotated"], pa.bool_()),
            "wheel_180": pa.array(rows["wheel_180"], pa.bool_()),
            "content": pa.array(rows["content"], pa.binary()),
        })
        folder = args.out / f"site-{site}" / "lines"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "part-0.parquet")


if __name__ == "__main__":
    main()
