"""Which cheap signals of the model tell what it knows: teacher-forced readings in three frames and hidden states,
combined by a logistic regression fitted on a few labelled items, measured out of sample.

On each fact set (tools/make_fact_sets.py: train asks a fact, test asks the same fact in other words, same ids), the
default model in one process:
  1. labels: answers every training and every test question (the answer stage, `max_tokens` 24), graded `contains`:
     known_train, known_test, and known2 (right both ways), the target throughout;
  2. features per item from batched teacher-forced passes in three frames: chat (the chat template and "The
     correct answer is "), raw (no template: "Question: q\\nAnswer: The correct answer is ref") and fewshot (three
     other items as "Q: ..\\nA: ..", then "Q: q\\nA: ref"), read as the probe reads them (slearn_mlx.probe: the best of
     an item's references): log P(reference), mean log-prob per token, least likely token's log-prob, greedy (every
     token the argmax); and from one more pass over the context alone, the entropy of the first answer token. The
     hidden state of the question's last token in the chat frame, at a middle and a 2/3-depth layer, enters as its
     first 4 principal components (PCA over all items of the set, no labels: as the product could);
  3. out of sample: per feature subset, an L2 logistic regression (numpy, Newton, standardised features) fitted on a
     random calibration sample of n = 24/48/96 items (`--draws` draws, each with at least 2 of each class), scored
     on the other items: ROC AUC of its score and agreement of its verdict (p >= 0.5) with known2, means over the
     draws; and 5-fold cross-validation (out-of-fold scores pooled, mean over 4 shuffles);
  4. transfer: fitted on all of one set, applied to the other: AUC, agreement as fitted, agreement with only the
     intercept refitted on `--transfer-sample` labelled target items (mean over the draws, scored on the rest), and
     for comparison a model fitted on those items alone.

    python bench/knowledge_features.py /tmp/facts [--sets world,capitals] [--draws 20] [--limit N]

(`--limit N`: the first N items of each set, a quick check; a calibration size that leaves fewer than 10 items to
score is left out, "-".)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# isort: off
import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx
import mlx.nn as nn

# isort: on
from slearn_mlx.answer import AnswerConfig, answer_items, encode_chat, question_text, shared_prefix
from slearn_mlx.data import load_items
from slearn_mlx.grade import PROBE_THRESHOLDS, grade_deterministic
from slearn_mlx.judge import Prefix, last_token_logprobs
from slearn_mlx.models.load import load_model
from slearn_mlx.probe import Frame, ProbeRow, knowledge_of, probe_rows, read_sharing
from slearn_mlx.prompts import PROBE_LEAD
from slearn_mlx.records import Answer
from slearn_mlx.runs import read_records

RAW_PROMPT = "Question: {question}\nAnswer: " + PROBE_LEAD.rstrip()
FRAMES = ("chat", "raw", "few")
SCALARS = ("lp", "mean", "min", "greedy", "entropy")
SIZES = (24, 48, 96)
N_PCA = 4


# --- 1. labels --------------------------------------------------------------------------------------------------
def labels(model, tokenizer, train, test, tmp: Path) -> dict[str, np.ndarray]:
    """known_train, known_test, known2 per training item (test items share its id)."""
    right = {}
    for split, items in (("train", train), ("test", test)):
        path = tmp / f"answers-{split}.jsonl"
        answer_items(model, tokenizer, items, path, AnswerConfig(max_tokens=24), progress=False)
        answers = read_records(path, Answer)
        right[split] = {i.id: grade_deterministic("contains", i, answers[i.id].text)[0] for i in items}
    known_train = np.array([right["train"][i.id] for i in train])
    known_test = np.array([right["test"][i.id] for i in train])
    return {"known_train": known_train, "known_test": known_test, "known2": known_train & known_test}


# --- 2. features --------------------------------------------------------------------------------------------------
class Tap(nn.Module):
    """A transformer block that keeps its output: the hidden state after it."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.out = inner, None
        if hasattr(inner, "use_sliding"):
            self.use_sliding = inner.use_sliding

    def __call__(self, *args, **kwargs):
        self.out = self.inner(*args, **kwargs)
        return self.out


@contextmanager
def tapped(model, layers):
    blocks = model.model.layers
    taps = [Tap(blocks[i]) for i in layers]
    for i, tap in zip(layers, taps):
        blocks[i] = tap
    try:
        yield taps
    finally:
        for i, tap in zip(layers, taps):
            blocks[i] = tap.inner


def raw_rows(tokenizer, item) -> list[ProbeRow]:
    """The raw frame: no chat template, the lead written after "Answer:", then each reference."""
    prompt = tokenizer.encode(RAW_PROMPT.format(question=item.question), add_special_tokens=False)
    return [ProbeRow(prompt, tokenizer.encode(" " + ref.strip(), add_special_tokens=False)) for ref in item.references]


def question_ends(tokenizer, items) -> dict[str, int]:
    """Per item, the position of the question's last token in the chat frame (before the template's closing)."""
    a, b = encode_chat(tokenizer, "What is it?"), encode_chat(tokenizer, "Who was there!")
    tail = next(k for k in range(1, len(a)) if a[-k - 1] != b[-k - 1])  # tokens after the user's message
    return {i.id: len(encode_chat(tokenizer, question_text(i))) - tail - 1 for i in items}


def read_frame(model, items, rows, batch_size, shots=(), layers=(), ends=None):
    """Per item, in batches cut from the items sorted by length: the probe's reading of the best of its references
    (read_sharing, as probe_items reads) -> SCALARS; with `layers`, the hidden state after each at `ends[id]`."""
    common = [row.context for item in items if item.id not in shots for row in rows[item.id]]
    n_shared = shared_prefix(common) if common else 0
    prefix = Prefix(model, common[0][:n_shared]) if n_shared and Prefix.usable(model) else None
    order = sorted(range(len(items)), key=lambda i: max(len(r.context) + len(r.target) for r in rows[items[i].id]))
    feats, hidden = np.zeros((len(items), len(SCALARS))), [None] * len(items)
    with tapped(model, layers) as taps:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            reads = iter(read_sharing(model, [row for i in idx for row in rows[items[i].id]], prefix))
            best = [max(((knowledge_of(items[i], row, next(reads)), row) for row in rows[items[i].id]),
                        key=lambda kr: kr[0].logprob) for i in idx]  # fmt: skip
            # The context alone, whole (the taps need every position): where the first answer token is predicted.
            logprobs = last_token_logprobs(model, [row.context for _, row in best])
            entropy = np.array(-(mx.exp(logprobs) * logprobs).sum(-1))
            if layers:
                picked = mx.arange(len(idx)), mx.array([ends[items[i].id] for i in idx])
                states = np.array(mx.stack([tap.out[picked] for tap in taps], axis=1).astype(mx.float32))
            for j, (i, (k, _)) in enumerate(zip(idx, best)):
                feats[i] = [k.logprob, k.logprob / k.n_tokens, k.min_logprob, float(k.greedy), entropy[j]]
                hidden[i] = states[j] if layers else None
    return feats, (np.stack(hidden) if layers else None)


def features(model, tokenizer, items, layers, batch_size) -> dict[str, np.ndarray]:
    """Columns by name: FRAME_SCALAR for each frame and scalar, hL_pcK for each tapped layer L."""
    frames = {"chat": Frame.for_items("chat", items), "raw": None, "few": Frame.for_items("fewshot", items)}
    ends, columns = question_ends(tokenizer, items), {}
    for name, frame in frames.items():
        rows = {i.id: raw_rows(tokenizer, i) if frame is None else probe_rows(tokenizer, i, frame) for i in items}
        shots = {s.id for s in frame.shots} if frame is not None else set()
        tap = layers if name == "chat" else ()
        feats, hidden = read_frame(model, items, rows, batch_size, shots, tap, ends)
        columns.update({f"{name}_{s}": feats[:, k] for k, s in enumerate(SCALARS)})
        for k, layer in enumerate(tap):
            h = hidden[:, k] - hidden[:, k].mean(0)
            components = h @ np.linalg.svd(h, full_matrices=False)[2][:N_PCA].T
            columns.update({f"h{layer}_pc{c + 1}": components[:, c] for c in range(N_PCA)})
    return columns


# --- 3. evaluation (numpy only) -----------------------------------------------------------------------------------
def auc(score, y) -> float:
    pos, neg = score[y], score[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    return float(((pos[:, None] > neg).sum() + 0.5 * (pos[:, None] == neg).sum()) / (len(pos) * len(neg)))


def logit(X, y, lam: float):
    """L2-regularised logistic regression by Newton's method on standardised features (intercept unpenalised): its
    decision function (log-odds; >= 0 is a verdict of known)."""
    mu, sd = X.mean(0), np.where(X.std(0) < 1e-9, 1.0, X.std(0))
    Z = np.hstack([np.ones((len(X), 1)), (X - mu) / sd])
    w, penalty = np.zeros(Z.shape[1]), np.r_[1e-6, np.full(Z.shape[1] - 1, lam)]
    for _ in range(50):
        p = 1 / (1 + np.exp(-np.clip(Z @ w, -30, 30)))
        step = np.linalg.solve((Z * (p * (1 - p))[:, None]).T @ Z + np.diag(penalty), Z.T @ (p - y) + penalty * w)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return lambda X: w[0] + (X - mu) / sd @ w[1:]


def samples(y, n: int, count: int, seed: int) -> list[np.ndarray]:
    """`count` random samples of n items, each with at least 2 of each class; none where fewer than 10 items would be
    left to score, or a class has fewer than 2."""
    rng, out = np.random.default_rng(seed), []
    if n > len(y) - 10 or min(y.sum(), (~y).sum()) < 2:
        return out
    for _ in range(1000 * count):
        s = rng.choice(len(y), n, replace=False)
        if 2 <= y[s].sum() <= n - 2:
            out.append(s)
            if len(out) == count:
                break
    return out


def out_of_sample(X, y, lam: float, draws: int) -> list[float]:
    """[AUC, agreement] at each calibration size, then of 5-fold CV."""
    cells = []
    for n in SIZES:
        scores = []
        for s in samples(y, n, draws, seed=n):
            rest = np.setdiff1d(np.arange(len(y)), s)
            d = logit(X[s], y[s], lam)(X[rest])
            scores.append((auc(d, y[rest]), ((d >= 0) == y[rest]).mean()))
        cells += list(np.mean(scores, axis=0)) if scores else [float("nan")] * 2
    scores = []
    for shuffle in range(4):
        d = np.zeros(len(y))
        for fold in np.array_split(np.random.default_rng(100 + shuffle).permutation(len(y)), 5):
            rest = np.setdiff1d(np.arange(len(y)), fold)
            d[fold] = logit(X[rest], y[rest], lam)(X[fold])
        scores.append((auc(d, y), ((d >= 0) == y).mean()))
    return cells + list(np.mean(scores, axis=0))


def fit_intercept(d, y) -> float:
    """The offset b that best fits y ~ sigmoid(d + b) (1-D Newton)."""
    b = 0.0
    for _ in range(50):
        p = 1 / (1 + np.exp(-np.clip(d + b, -30, 30)))
        b -= (p - y).sum() / ((p * (1 - p)).sum() + 1e-9)
    return b


def transfer(source, target, lam: float, n: int, draws: int) -> list[float]:
    """[AUC, agreement as fitted, agreement with the intercept refitted on n target items, own fit on those n]."""
    (Xs, ys), (Xt, yt) = source, target
    d = logit(Xs, ys, lam)(Xt)
    refit, own = [], []
    for s in samples(yt, n, draws, seed=n):
        rest = np.setdiff1d(np.arange(len(yt)), s)
        refit.append(((d[rest] + fit_intercept(d[s], yt[s]) >= 0) == yt[rest]).mean())
        own.append(((logit(Xt[s], yt[s], lam)(Xt[rest]) >= 0) == yt[rest]).mean())
    return [auc(d, yt), ((d >= 0) == yt).mean(), np.mean(refit) if refit else np.nan, np.mean(own) if own else np.nan]


# --- 4. tables ----------------------------------------------------------------------------------------------------
def subsets(layers) -> dict[str, list[str]]:
    def of(*frames):
        return [f"{f}_{s}" for f in frames for s in SCALARS]

    scalars = {
        "P(reference), chat frame alone": ["chat_lp"],
        "P(reference), few-shot frame alone": ["few_lp"],
        "chat frame (5 scalars)": of("chat"),
        "few-shot frame (5)": of("few"),
        "chat + few-shot (10)": of("chat", "few"),
        "log P(ref) in chat + raw + few-shot (3)": ["chat_lp", "raw_lp", "few_lp"],
        "all scalars: chat + raw + few-shot (15)": of(*FRAMES),
    }
    hidden = {f"all scalars + hidden L{L} (PCA {N_PCA})": of(*FRAMES) + [f"h{L}_pc{c + 1}" for c in range(N_PCA)]
              for L in layers}  # fmt: skip
    return {**scalars, **hidden}


def cell(x, percent: bool = False) -> str:
    return "-" if np.isnan(x) else f"{100 * x:.1f}%" if percent else f"{x:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("facts", type=Path)
    parser.add_argument("--sets", default="world,capitals")
    parser.add_argument("--limit", type=int, default=0, help="only the first N items of each set (a quick check)")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--lam", type=float, default=1.0, help="L2 penalty on the standardised coefficients")
    parser.add_argument("--transfer-sample", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    model, tokenizer = load_model(None)
    n_layers = len(model.model.layers)
    layers = [n_layers // 2, 2 * n_layers // 3]
    data = {}
    for name in args.sets.split(","):
        train, test = (load_items(args.facts / name / f"{split}.jsonl") for split in ("train", "test"))
        if args.limit:
            train = train[: args.limit]
            test = [i for i in test if i.id in {t.id for t in train}]
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            known = labels(model, tokenizer, train, test, Path(tmp))
        answer_s, start = time.perf_counter() - start, time.perf_counter()
        columns = features(model, tokenizer, train, layers, args.batch_size)
        y = known["known2"]
        data[name] = (columns, y)
        default = np.exp(columns["few_lp"]) >= PROBE_THRESHOLDS["fewshot"]
        print(f"\n### {name}: {len(train)} items; answered right: in the training wording "
              f"{known['known_train'].mean():.1%}, in other words {known['known_test'].mean():.1%}, both (known2, the "
              f"target) {y.mean():.1%}. Answer stage {answer_s:.0f} s (both wordings), feature passes "
              f"{time.perf_counter() - start:.0f} s. The probe's default verdict (few-shot P(reference) >= "
              f"{PROBE_THRESHOLDS['fewshot']}) agrees with known2 on {((default == y).mean()):.1%}.\n")  # fmt: skip
        head = [f"n={n} {what}" for n in SIZES for what in ("AUC", "agreement")] + ["5-fold CV AUC", "CV agreement"]
        print("| features | " + " | ".join(head) + " |\n| --- |" + " ---: |" * len(head))
        for label, cols in subsets(layers).items():
            cells = out_of_sample(np.column_stack([columns[c] for c in cols]), y, args.lam, args.draws)
            print(f"| {label} | " + " | ".join(cell(x, k % 2 == 1) for k, x in enumerate(cells)) + " |", flush=True)
    if len(data) == 2:
        n = args.transfer_sample
        print(f"\n### Transfer: fitted on all of one set, applied to the other (known2; refitted intercept and own fit: "
              f"on {n} target items, {args.draws} draws, scored on the rest)\n")  # fmt: skip
        print(f"| features | fitted on -> applied to | AUC | agreement as fitted | agreement, intercept refitted on {n} "
              f"| agreement, own fit on {n} |\n| --- | --- | ---: | ---: | ---: | ---: |")  # fmt: skip
        for label, cols in subsets(()).items():  # scalars only: each set has its own principal components
            for src, dst in (list(data), list(data)[::-1]):
                source, target = ((np.column_stack([data[s][0][c] for c in cols]), data[s][1]) for s in (src, dst))
                cells = transfer(source, target, args.lam, n, args.draws)
                print(f"| {label} | {src} -> {dst} | " + " | ".join(cell(x, k > 0) for k, x in enumerate(cells)) + " |")


if __name__ == "__main__":
    main()
