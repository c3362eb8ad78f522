"""Makes the text test set: a tokenizer, a transformer-shaped review classifier over its
token ids, and reviews whose answers are known.

    .venv/bin/python tests/data/make_text_models.py

writes, deterministically (outputs are committed):

- `text/models/review_sentiment.tokenizer.json`: a BERT-style WordPiece tokenizer
  (lowercasing normaliser, [CLS] ... [SEP] template, [PAD] = 0) trained by Hugging Face's
  `tokenizers` on the reviews below;
- `text/models/review_sentiment.onnx`: inputs `input_ids` and `attention_mask` (int64
  [N, ?], as a transformer export has them); token embeddings mean-pooled over the mask; a
  2-class head. A token of a positive word embeds as (1, 0), a negative word as (0, 1),
  everything else as (0, 0), so a review is positive when it has more positive words
  than negative ones. Outputs `label` (int64 [N]) and `probabilities` (float [N, 2]);
- `text/reviews.jsonl`: one review a line with its label, its ids and mask as the Python
  tokenizer gives them at 64 tokens, and the probability of "positive" from onnxruntime
  in Python on those ids: the answers shoal's Rust tokenizer and model runs must give.
"""

import json
import random
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

OUT = Path(__file__).parent / "text"
MAX_TOKENS = 64
POSITIVE = ["excellent", "wonderful", "delightful", "superb", "lovely", "great",
            "enjoyable", "charming", "brilliant", "pleasant"]
NEGATIVE = ["terrible", "awful", "dreadful", "horrible", "boring", "disappointing",
            "poor", "dull", "broken", "tedious"]
NEUTRAL = ["the", "product", "arrived", "on", "time", "and", "it", "was", "service",
           "staff", "room", "food", "package", "delivery", "we", "found", "quite", "very",
           "overall", "experience", "hotel", "a", "with", "our", "stay", "price", "size",
           "colour", "box", "after", "week", "two", "days", "of", "use", "in", "Berlin",
           "café", "naïve", "Zürich"]
# Rare strings the vocabulary splits into word pieces (or [UNK]): neutral either way.
RARE = ["xq7", "order#4411", "10/10", "e-mail", "thx", "😀"]


def review(rng: random.Random, positive: bool) -> str:
    major, minor = (POSITIVE, NEGATIVE) if positive else (NEGATIVE, POSITIVE)
    words = rng.choices(NEUTRAL, k=rng.randint(6, 14))
    words += rng.sample(major, rng.randint(2, 3)) + rng.sample(minor, rng.randint(0, 1))
    if rng.random() < 0.3:
        words.append(rng.choice(RARE))
    rng.shuffle(words)
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", "!", "..."])


def train_tokenizer(corpus: list[str]) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials, min_frequency=2)
    tok.train_from_iterator(corpus, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def classifier(tok: Tokenizer) -> onnx.ModelProto:
    vocab = tok.get_vocab()
    table = np.zeros((len(vocab), 2), dtype=np.float32)
    for token, i in vocab.items():
        if token in POSITIVE:
            table[i] = (1, 0)
        elif token in NEGATIVE:
            table[i] = (0, 1)
    for word in POSITIVE + NEGATIVE:
        assert word in vocab, f"{word} must be one token"
    head = np.array([[-20.0, 20.0], [20.0, -20.0]], dtype=np.float32)
    const = lambda name, value: helper.make_tensor(  # noqa: E731
        name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape, value.flatten())
    nodes = [
        helper.make_node("Gather", ["embeddings", "input_ids"], ["tokens"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["tokens", "mask3"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["safe_count"]),
        helper.make_node("Div", ["summed", "safe_count"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "head"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    inits = [
        const("embeddings", table), const("head", head),
        const("axis1", np.array([1], dtype=np.int64)), const("axis2", np.array([2], dtype=np.int64)),
        const("one", np.array([1.0], dtype=np.float32)),
    ]
    graph = helper.make_graph(
        nodes, "review_sentiment",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "L"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "L"])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    rng = random.Random(18)
    labels = [i % 2 == 0 for i in range(120)]
    reviews = [review(rng, positive) for positive in labels]
    tok = train_tokenizer(reviews)
    model = classifier(tok)
    (OUT / "models").mkdir(parents=True, exist_ok=True)
    tok.save(str(OUT / "models/review_sentiment.tokenizer.json"))
    onnx.save(model, OUT / "models/review_sentiment.onnx")

    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding(length=MAX_TOKENS, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    encoded = tok.encode_batch(reviews)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    label, proba = session.run(None, {"input_ids": ids, "attention_mask": mask})
    assert (label == np.array(labels)).all(), "every review's answer is known"
    with open(OUT / "reviews.jsonl", "w", encoding="utf-8") as out:
        for i, text in enumerate(reviews):
            row = {"text": text, "positive": labels[i], "input_ids": ids[i].tolist(),
                   "attention_mask": mask[i].tolist(), "p_positive": float(proba[i, 1])}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(reviews)} reviews, vocabulary of {tok.get_vocab_size()} tokens -> {OUT}")


if __name__ == "__main__":
    main()
