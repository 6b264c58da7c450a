#!/usr/bin/python3
"""Near-duplicate pairs as the reference's find-near-duplicates.py computes them (SPEC §9).

The reference (rasbt/LLMs-from-scratch ch07/02_dataset-utilities/find-near-duplicates.py):

    text = re.sub(r'[^\\w\\s]', '', text.lower())             # preprocess_text
    TfidfVectorizer(stop_words=None, analyzer='char', ngram_range=(1, 3)).fit_transform(texts)
    cosine_similarity(tfidf_matrix)

scikit-learn is not installed here, so its definition is written out below with numpy
(scikit-learn 1.x, sklearn/feature_extraction/text.py, defaults of TfidfVectorizer):

  - preprocessor: str.lower() (lowercase=True), no accent stripping;
  - analyzer 'char' (_char_ngrams): runs of two or more whitespace characters (regex \\s\\s+)
    become one space, then every substring of 1, 2 and 3 characters (code points), in order;
  - term counts (no binary, no sublinear tf); every n-gram is a feature (min_df=1, max_df=1.0);
  - idf = ln((1 + n) / (1 + df)) + 1 (smooth_idf=True), n = number of documents;
  - each row tf * idf divided by its l2 norm (norm='l2'); a row of zeros stays zero;
  - cosine similarity of l2-normalised rows is their dot product. Everything in float64.

Documents of a field are the entries whose field is non-empty (the reference's `if item[key]`);
unlike the reference, pair indices are entry indices in the file (the reference indexes the
filtered list as if it were the file, which mismatches once an empty field was skipped). Pairs
where either raw text has at most one character are skipped, as in the reference. A pair is
reported when its score is at least the threshold (minus 1e-9 for rounding).

Writes (from the repository root):

    /usr/bin/python3 tests/reference/dedup_reference.py        # needs python3-numpy

  tests/golden/dedup_pairs.json    every pair with score >= 0.75 (the reference function's
                                   default threshold) per field of data/instruction-data.json
  tests/golden/dedup_unicode.json  for tests/data/datasets/dedup_unicode.json: each entry's
                                   instruction after preprocessing and whitespace folding, and the
                                   score of every pair of instructions (threshold 0: all pairs)
"""
import json
import math
import os
import re
import sys

import numpy as np

FIELDS = ("instruction", "input", "output")
WHITE_SPACES = re.compile(r"\s\s+")  # sklearn's VectorizerMixin._white_spaces


def preprocess_text(text):
    """The reference's preprocess_text: lower-case, drop everything but word chars and spaces."""
    return re.sub(r"[^\w\s]", "", text.lower())


def analyzed_text(text):
    """What sklearn's char analyzer slices into n-grams: lower() again, whitespace runs folded."""
    return WHITE_SPACES.sub(" ", preprocess_text(text).lower())


def char_ngrams(doc):
    """sklearn's _char_ngrams with ngram_range=(1, 3) on an analyzed text."""
    grams = list(doc)
    for n in range(2, min(3 + 1, len(doc) + 1)):
        for i in range(len(doc) - n + 1):
            grams.append(doc[i:i + n])
    return grams


def tfidf(docs):
    """Dense (n, F) float64 matrix of l2-normalised tf-idf rows (TfidfVectorizer defaults)."""
    counts = []
    vocab = {}
    for d in docs:
        c = {}
        for g in char_ngrams(analyzed_text(d)):
            c[g] = c.get(g, 0) + 1
            vocab.setdefault(g, len(vocab))
        counts.append(c)
    n = len(docs)
    x = np.zeros((n, len(vocab)), dtype=np.float64)
    for r, c in enumerate(counts):
        for g, k in c.items():
            x[r, vocab[g]] = k
    df = (x > 0).sum(axis=0)
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    x *= idf
    norms = np.sqrt((x * x).sum(axis=1))
    norms[norms == 0] = 1.0
    return x / norms[:, None]


def field_pairs(entries, field, threshold):
    """[(i, j, score)] with i < j entry indices, score >= threshold, in (i, j) order."""
    idx = [i for i, e in enumerate(entries) if e[field]]
    if not idx:
        return []
    x = tfidf([entries[i][field] for i in idx])
    sim = x @ x.T
    out = []
    for a in range(len(idx)):
        for b in range(a + 1, len(idx)):
            s = float(sim[a, b])
            i, j = idx[a], idx[b]
            if s < threshold - 1e-9:
                continue
            if len(entries[i][field]) <= 1 or len(entries[j][field]) <= 1:
                continue
            out.append((i, j, s))
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "data", "instruction-data.json"), encoding="utf-8") as f:
        data = json.load(f)
    threshold = 0.75
    golden = {"dataset": "data/instruction-data.json", "threshold": threshold, "pairs": {}}
    for field in FIELDS:
        pairs = field_pairs(data, field, threshold)
        golden["pairs"][field] = [[i, j, s] for i, j, s in pairs]
        print(f"{field}: {len(pairs)} pairs >= {threshold}, "
              f"{sum(1 for p in pairs if p[2] >= 0.9 - 1e-9)} >= 0.9", file=sys.stderr)
    with open(os.path.join(root, "tests", "golden", "dedup_pairs.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")

    with open(os.path.join(root, "tests", "data", "datasets", "dedup_unicode.json"),
              encoding="utf-8") as f:
        uni = json.load(f)
    texts = [e["instruction"] for e in uni]
    uni_golden = {
        "dataset": "tests/data/datasets/dedup_unicode.json",
        "analyzed": [analyzed_text(t) for t in texts],
        "pairs": [[i, j, s] for i, j, s in field_pairs(uni, "instruction", 0.0)],
    }
    with open(os.path.join(root, "tests", "golden", "dedup_unicode.json"), "w",
              encoding="utf-8") as f:
        json.dump(uni_golden, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
