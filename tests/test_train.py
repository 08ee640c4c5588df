"""Stage 4: LoRA training, adapters that mlx-lm loads and fuses unchanged."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map
from mlx_lm.tuner.datasets import CacheDataset, ChatDataset

from slearn_mlx.models.load import load_model
from slearn_mlx.records import QAItem
from slearn_mlx.select import chat_example
from slearn_mlx.training.batches import PAD_MULTIPLE, batch_order, make_batch
from slearn_mlx.training.config import TrainConfig
from slearn_mlx.training.loop import TrainHooks, train_adapters
from slearn_mlx.training.loss import answer_loss, mean_loss


def stop_after(steps: int | None):
    """A `before_step` that ends training after `steps` steps of the call, as a kill would; None: never."""
    return None if steps is None else (lambda done: done >= steps)


def write_train_dir(path, n: int):
    path.mkdir(parents=True, exist_ok=True)
    rows = [chat_example(QAItem(str(i), f"What is item {i}?", f"Item {i} is the answer")) for i in range(n)]
    (path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:1]))


def test_training_lowers_the_loss_and_saves_mlx_lm_adapters(tiny_model, tmp_path):
    model, tokenizer = load_model(tiny_model)
    write_train_dir(tmp_path / "train", 6)
    config = TrainConfig(epochs=4, batch_size=4, learning_rate=5e-3, rank=4, num_layers=2)
    summary = train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "adapters", config, progress=False)
    assert summary.steps == 4 * 2  # 6 pairs at batch 4: a full and a smaller batch per epoch
    losses = [json.loads(l) for l in (tmp_path / "train" / "losses.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in losses] == [1, 2, 3, 4]
    assert losses[-1]["train_loss"] < losses[0]["train_loss"]
    adapter_config = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert adapter_config["fine_tune_type"] == "lora" and adapter_config["num_layers"] == 2
    # mlx_lm.load applies them, and they change the model's output.
    base, _ = load_model(tiny_model)
    adapted, _ = load_model(tiny_model, adapter_path=tmp_path / "adapters")
    tokens = mx.array([[1, 40, 50, 60]])
    assert not np.allclose(np.array(base(tokens)), np.array(adapted(tokens)))


def test_fewer_pairs_than_the_batch_size_still_train(tiny_model, tmp_path):
    model, tokenizer = load_model(tiny_model)
    write_train_dir(tmp_path / "train", 2)
    summary = train_adapters(
        model,
        tokenizer,
        tmp_path / "train",
        tmp_path / "a",
        TrainConfig(epochs=2, batch_size=8, num_layers=1),
        progress=False,
    )
    assert summary.steps == 2 and (tmp_path / "a" / "adapters.safetensors").exists()


def _lengths(tokenizer, rows) -> list[int]:
    return [len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False)) for r in rows]


@pytest.mark.parametrize("cut", [False, True])
def test_the_summary_names_the_longest_pair(tiny_model, tmp_path, cut):
    model, tokenizer = load_model(tiny_model)
    write_train_dir(tmp_path / "train", 3)
    rows = [json.loads(line) for line in (tmp_path / "train/train.jsonl").read_text().splitlines()]
    rows[1]["messages"][-1]["content"] += " and a much longer answer than the others"
    (tmp_path / "train/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lengths = _lengths(tokenizer, rows)
    max_seq_length = lengths[0] + 2 if cut else 1024  # cut: only the long pair is cut
    assert lengths[1] > lengths[0] + 2
    config = TrainConfig(epochs=1, batch_size=2, num_layers=1, max_seq_length=max_seq_length)
    summary = train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "a", config, progress=False)
    assert summary.longest == min(max(lengths), max_seq_length)
    assert math.isfinite(summary.train_loss) and math.isfinite(summary.val_loss)


def test_a_length_that_cuts_off_every_answer_is_an_error(tiny_model, tmp_path):
    model, tokenizer = load_model(tiny_model)
    write_train_dir(tmp_path / "train", 3)
    config = TrainConfig(epochs=1, num_layers=1, max_seq_length=4)
    with pytest.raises(ValueError, match="max_seq_length 4 cuts off every answer"):
        train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "a", config, progress=False)
    assert not (tmp_path / "a").exists()


def test_a_batch_cut_to_prompts_only_has_zero_loss_not_nan(tiny_model):
    model, tokenizer = load_model(tiny_model)
    rows = [chat_example(QAItem(str(i), f"What is item {i}?", f"Item {i}")) for i in range(2)]
    dataset = CacheDataset(ChatDataset(rows, tokenizer, mask_prompt=True))
    batch = make_batch(dataset, [0, 1], 4)
    loss, n_tokens = answer_loss(model, *batch)
    assert n_tokens.item() == 0 and loss.item() == 0.0


def test_empty_selection_is_a_message_not_a_crash(tiny_model, tmp_path):
    model, tokenizer = load_model(tiny_model)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "train.jsonl").write_text("")
    summary = train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "a", progress=False)
    assert "nothing to train" in str(summary) and not (tmp_path / "a").exists()


def test_batches_cover_every_example_each_epoch():
    dataset = [([1] * n, 1) for n in (3, 9, 4, 40, 7)]
    rng = np.random.default_rng(0)
    seen = []
    for batch in (make_batch(dataset, indices, 64) for indices in batch_order(dataset, 2, rng)):
        assert batch.tokens.shape[1] % PAD_MULTIPLE == 0 or batch.tokens.shape[1] == 64
        seen += [int(n) for _, n in batch.bounds.tolist()]
    assert sorted(seen) == sorted(len(t) for t, _ in dataset)


@pytest.mark.parametrize("max_seq_length", [1024, 40])  # 40: answers cut short
def test_answer_loss_equals_mlx_lm_default_loss(tiny_model, tmp_path, max_seq_length):
    from mlx_lm.tuner.trainer import default_loss

    model, tokenizer = load_model(tiny_model)
    write_train_dir(tmp_path, 7)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    rows[3]["messages"][1]["content"] = "a much longer answer than the others, " * 3
    dataset = CacheDataset(ChatDataset(rows, tokenizer, mask_prompt=True))
    batch = make_batch(dataset, list(range(7)), max_seq_length)
    loss, n = answer_loss(model, *batch)
    expected_loss, expected_n = default_loss(model, batch.tokens, batch.bounds)
    assert n.item() == expected_n.item() > 0
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)


@pytest.mark.parametrize("tool", ["fuse", "generate"])
def test_mlx_lm_tools_take_the_adapters(tiny_model, tmp_path, tool):
    model, tokenizer = load_model(tiny_model)
    write_train_dir(tmp_path / "train", 3)
    train_adapters(
        model, tokenizer, tmp_path / "train", tmp_path / "adapters", TrainConfig(epochs=1, num_layers=2), progress=False
    )
    args = {
        "fuse": [
            "fuse",
            "--model",
            tiny_model,
            "--adapter-path",
            str(tmp_path / "adapters"),
            "--save-path",
            str(tmp_path / "fused"),
        ],
        "generate": [
            "generate",
            "--model",
            tiny_model,
            "--adapter-path",
            str(tmp_path / "adapters"),
            "--prompt",
            "hi",
            "--max-tokens",
            "3",
        ],
    }[tool]
    result = subprocess.run([sys.executable, "-m", "mlx_lm", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    if tool == "fuse":
        fused, _ = load_model(str(tmp_path / "fused"))
        adapted, _ = load_model(tiny_model, adapter_path=tmp_path / "adapters")
        tokens = mx.array([[1, 40, 50, 60]])
        np.testing.assert_allclose(np.array(fused(tokens)), np.array(adapted(tokens)), atol=1e-4)


def _adapters(path):
    return mx.load(str(path / "adapters.safetensors"))


@pytest.mark.parametrize("dropout,num_layers", [(0.0, 2), (0.1, 2), (0.1, 1)])
def test_a_run_stopped_and_resumed_ends_with_the_uninterrupted_adapters(tiny_model, tmp_path, dropout, num_layers):
    # With one of the two blocks trained, the other's output is computed once per run (frozen.py): a resumed run
    # computes the same.
    config = TrainConfig(
        epochs=3, batch_size=3, learning_rate=5e-3, rank=4, num_layers=num_layers, dropout=dropout, checkpoint_every=2
    )
    for run in ("whole", "cut"):
        write_train_dir(tmp_path / run / "train", 10)
    model, tokenizer = load_model(tiny_model)
    whole = train_adapters(model, tokenizer, tmp_path / "whole/train", tmp_path / "whole/a", config, progress=False)
    # Stopped mid-epoch (steps 3 and 5 fall between checkpoints), across an epoch's end, then finished.
    for steps in (3, 2, 5, None):
        model, tokenizer = load_model(tiny_model)
        cut = train_adapters(
            model, tokenizer, tmp_path / "cut/train", tmp_path / "cut/a", config, progress=False,
            hooks=TrainHooks(before_step=stop_after(steps)),
        )  # fmt: skip
    assert cut.resumed_at_step == 8 and cut.steps == whole.steps == 12
    expected, got = _adapters(tmp_path / "whole/a"), _adapters(tmp_path / "cut/a")
    assert expected.keys() == got.keys() and all(mx.array_equal(expected[k], got[k]).item() for k in expected)
    assert (tmp_path / "cut/train/losses.jsonl").read_text() == (tmp_path / "whole/train/losses.jsonl").read_text()
    assert not (tmp_path / "cut/train/checkpoint.safetensors").exists()


def test_a_checkpoint_of_other_training_is_not_resumed(tiny_model, tmp_path):
    write_train_dir(tmp_path / "train", 6)
    model, tokenizer = load_model(tiny_model)
    config = TrainConfig(epochs=2, batch_size=2, num_layers=2, checkpoint_every=1)
    train_adapters(
        model,
        tokenizer,
        tmp_path / "train",
        tmp_path / "a",
        config,
        progress=False,
        hooks=TrainHooks(before_step=stop_after(2)),
    )
    assert (tmp_path / "train/checkpoint.safetensors").exists()
    model, tokenizer = load_model(tiny_model)
    summary = train_adapters(
        model, tokenizer, tmp_path / "train", tmp_path / "a", replace(config, learning_rate=1e-3), progress=False
    )
    assert summary.resumed_at_step == 0 and summary.steps == 6


def test_the_best_epoch_is_kept_and_patience_stops_training(tiny_model, tmp_path):
    write_train_dir(tmp_path / "train", 8)
    # Validation pairs unlike the training ones: a high learning rate overfits, validation loss turns up.
    rows = [chat_example(QAItem(str(i), f"Name colour {i}.", f"Colour {i} is teal")) for i in range(4)]
    (tmp_path / "train" / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = TrainConfig(epochs=12, batch_size=4, learning_rate=3e-2, rank=4, num_layers=2, patience=2)
    model, tokenizer = load_model(tiny_model)
    summary = train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "a", config, progress=False)
    losses = [json.loads(line) for line in (tmp_path / "train/losses.jsonl").read_text().splitlines()]
    val = [row["val_loss"] for row in losses]
    best = min(range(len(val)), key=val.__getitem__)
    assert summary.best_epoch == best + 1 and summary.val_loss == val[best]
    assert len(losses) == best + 1 + 2 < 12  # stopped two epochs after the best one
    # The saved adapters are the best epoch's: their validation loss is the best one.
    fresh, _ = load_model(tiny_model, adapter_path=tmp_path / "a")
    valid = CacheDataset(ChatDataset(rows, tokenizer, mask_prompt=True))
    assert mean_loss(fresh, valid, 4, 1024) == pytest.approx(val[best], rel=1e-5)


def test_copied_validation_pairs_never_choose_the_epoch_kept(tiny_model, tmp_path):
    """valid.jsonl copied from train.jsonl (select's default): its loss is watched, the last epoch is kept and
    patience does not stop training, whatever that loss does."""
    write_train_dir(tmp_path / "train", 8)  # valid.jsonl: the first training pair
    config = TrainConfig(epochs=5, batch_size=4, learning_rate=3e-2, rank=4, num_layers=2, patience=1)
    model, tokenizer = load_model(tiny_model)
    summary = train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "a", config, progress=False)
    losses = [json.loads(line) for line in (tmp_path / "train/losses.jsonl").read_text().splitlines()]
    assert len(losses) == 5 and summary.best_epoch is None and summary.val_loss == losses[-1]["val_loss"]
    assert "kept" not in str(summary)
    kept = _adapters(tmp_path / "a")
    assert all(np.array_equal(np.array(v), np.array(dict(tree_flatten(model.trainable_parameters()))[k]))
               for k, v in kept.items())  # fmt: skip


def write_anchors(path, n: int):
    lead = "The correct answer is "
    rows = [chat_example(QAItem(f"k{i}", f"Name colour {i}.", f"Colour {i} is teal"), lead=lead) | {"lead": lead}
            for i in range(n)]  # fmt: skip
    (path / "anchors.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _anchor_kl(model, base, tokenizer, rows):
    """The KL term over every anchor, as training computes it, and the batch it was computed on."""
    from slearn_mlx.training.anchors import AnchorTargets, lead_tokens, mixed_batch, mixed_loss

    anchors = CacheDataset(ChatDataset(rows, tokenizer, mask_prompt=True))
    skips = [lead_tokens(tokenizer, row["lead"]) for row in rows]
    targets = AnchorTargets.read(base, anchors, 1024, skips)
    batch = mixed_batch([], [], anchors, targets, list(range(len(rows))), 1024)
    return mixed_loss(model, *batch)[2].item(), batch


def test_the_kl_term_is_zero_for_the_base_model_and_never_above_the_full_kl(tiny_model, tmp_path):
    base, tokenizer = load_model(tiny_model)
    rows = write_anchors(tmp_path, 3)
    kl, batch = _anchor_kl(base, base, tokenizer, rows)
    assert kl == pytest.approx(0.0, abs=1e-5)
    # The lead's positions are left free: only what follows "The correct answer is" is held.
    lead = len(tokenizer.encode("The correct answer is", add_special_tokens=False))
    assert not np.array(batch.kl_scored)[:, :lead].any() and np.array(batch.kl_scored)[:, lead].all()
    assert not np.array(batch.ce_scored).any()
    # Another model: the kept top tokens plus one bucket for the rest give a KL between 0 and the full one.
    other, _ = load_model(tiny_model)
    other.update(tree_map(lambda w: w * 1.3, other.parameters()))
    bucketed, _ = _anchor_kl(other, base, tokenizer, rows)
    p = mx.softmax(base(batch.tokens[:, :-1]).astype(mx.float32), axis=-1)
    q = mx.softmax(other(batch.tokens[:, :-1]).astype(mx.float32), axis=-1)
    full = (p * (mx.log(p) - mx.log(q))).sum(-1)
    full = (full[mx.arange(3)[:, None], batch.positions] * batch.kl_scored).sum() / batch.kl_scored.sum()
    assert 0.0 < bucketed <= full.item() + 1e-5


def test_the_kl_term_keeps_the_anchors_close_to_the_base_model(tiny_model, tmp_path):
    drift = {}
    for kl in (0.0, 20.0):
        train = tmp_path / f"kl{kl}" / "train"
        write_train_dir(train, 8)
        rows = write_anchors(train, 4)
        model, tokenizer = load_model(tiny_model)
        # Adam moves every weight by about the learning rate on its first steps whatever the loss's scale,
        # so the KL term shows at a learning rate that leaves room to hold the anchors.
        config = TrainConfig(epochs=4, batch_size=4, learning_rate=5e-3, rank=4, num_layers=2, kl=kl, kl_batch=2)
        train_adapters(model, tokenizer, train, train.parent / "a", config, progress=False)
        losses = [json.loads(line) for line in (train / "losses.jsonl").read_text().splitlines()]
        assert ("kl" in losses[0]) == (kl > 0)
        base, _ = load_model(tiny_model)
        adapted, _ = load_model(tiny_model, adapter_path=train.parent / "a")
        drift[kl] = _anchor_kl(adapted, base, tokenizer, rows)[0]
    assert drift[20.0] < 0.6 * drift[0.0]


def test_a_run_with_anchors_resumes_to_the_uninterrupted_adapters(tiny_model, tmp_path):
    config = TrainConfig(epochs=2, batch_size=3, learning_rate=5e-3, rank=4, num_layers=2, kl=1.0, checkpoint_every=2)
    for run in ("whole", "cut"):
        write_train_dir(tmp_path / run / "train", 7)
        write_anchors(tmp_path / run / "train", 5)
    model, tokenizer = load_model(tiny_model)
    train_adapters(model, tokenizer, tmp_path / "whole/train", tmp_path / "whole/a", config, progress=False)
    for steps in (2, None):  # stopped mid-epoch, at a checkpoint
        model, tokenizer = load_model(tiny_model)
        cut = train_adapters(model, tokenizer, tmp_path / "cut/train", tmp_path / "cut/a", config, progress=False,
                             hooks=TrainHooks(before_step=stop_after(steps)))  # fmt: skip
    assert cut.resumed_at_step == 2
    expected, got = _adapters(tmp_path / "whole/a"), _adapters(tmp_path / "cut/a")
    assert all(mx.array_equal(expected[k], got[k]).item() for k in expected)
    assert (tmp_path / "cut/train/losses.jsonl").read_text() == (tmp_path / "whole/train/losses.jsonl").read_text()


@pytest.mark.parametrize("kind", ["dora", "full"])
def test_dora_and_full_fine_tuning_save_what_mlx_lm_loads(tiny_model, tmp_path, kind):
    model, tokenizer = load_model(tiny_model)
    write_train_dir(tmp_path / "train", 4)
    tokens = mx.array([[1, 40, 50, 60]])
    before = np.array(model(tokens))
    config = TrainConfig(epochs=1, batch_size=2, learning_rate=1e-2, num_layers=1, fine_tune_type=kind)
    train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "a", config, progress=False)
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert saved["fine_tune_type"] == kind and (saved["lora_parameters"] is None) == (kind == "full")
    weights = mx.load(str(tmp_path / "a" / "adapters.safetensors"))
    if kind == "full":  # every weight of the top block, nothing of the others
        assert all(name.startswith("model.layers.1.") for name in weights) and len(weights) >= 9
        assert np.allclose(np.array(model(tokens)), before, atol=1e-6)  # the model leaves as it came
    else:
        assert any(name.endswith(".m") for name in weights)  # DoRA's magnitudes
    adapted, _ = load_model(tiny_model, adapter_path=tmp_path / "a")
    assert not np.allclose(np.array(adapted(tokens)), before, atol=1e-4)


def test_lora_on_chosen_modules_only(tiny_model, tmp_path):
    model, tokenizer = load_model(tiny_model)
    write_train_dir(tmp_path / "train", 2)
    config = TrainConfig(epochs=1, num_layers=2, lora_modules="q_proj, self_attn.v_proj")
    train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "a", config, progress=False)
    keys = json.loads((tmp_path / "a" / "adapter_config.json").read_text())["lora_parameters"]["keys"]
    assert keys == ["self_attn.q_proj", "self_attn.v_proj"]
    names = {name.rsplit(".", 1)[0] for name in mx.load(str(tmp_path / "a" / "adapters.safetensors"))}
    assert names == {f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")}
    model, _ = load_model(tiny_model)
    with pytest.raises(ValueError, match="no linear module 'qkv'.*q_proj"):
        train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "b", replace(config, lora_modules="qkv"),
                       progress=False)  # fmt: skip


def test_the_learning_rate_warms_up_then_decays_as_mlx_lm_builds_it(tiny_model, tmp_path):
    from mlx_lm.tuner.utils import build_schedule

    from slearn_mlx.training.optim import build_optimizer, schedule_config

    config = TrainConfig(learning_rate=1e-3, optimizer="adamw", weight_decay=0.05, lr_schedule="cosine", warmup=3)
    optimizer = build_optimizer(config, 10)
    assert type(optimizer).__name__ == "AdamW" and optimizer.weight_decay == 0.05
    schedule = build_schedule(schedule_config(config, 10))
    rates = [schedule(mx.array(k)).item() for k in range(11)]
    assert rates[0] == 0.0 and rates[3] == pytest.approx(1e-3, rel=1e-5) and rates[10] == pytest.approx(0.0, abs=1e-9)
    rising, falling = zip(rates[:3], rates[1:4]), zip(rates[3:], rates[4:])
    assert all(a < b for a, b in rising) and all(a >= b - 1e-9 for a, b in falling) and rates[6] < rates[4]
    write_train_dir(tmp_path / "train", 4)
    model, tokenizer = load_model(tiny_model)
    train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "a", replace(config, num_layers=1), progress=False)
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert saved["optimizer"] == "adamw" and saved["lr_schedule"]["name"] == "cosine_decay"
    assert saved["optimizer_config"] == {"adamw": {"weight_decay": 0.05}}


def _identical_pairs(path, n: int):
    path.mkdir(parents=True, exist_ok=True)
    row = chat_example(QAItem("x", "What is it?", "It is this"))
    (path / "train.jsonl").write_text("".join(json.dumps(row | {"id": str(i)}) + "\n" for i in range(n)))


def test_accumulated_gradients_equal_one_larger_batch(tiny_model, tmp_path):
    # Four identical pairs: two batches of two summed and halved are one batch of four.
    for name, batch_size, accumulate in (("one", 4, 1), ("acc", 2, 2)):
        _identical_pairs(tmp_path / name, 4)
        model, tokenizer = load_model(tiny_model)
        config = TrainConfig(epochs=1, batch_size=batch_size, grad_accumulation=accumulate, learning_rate=1e-2,
                             num_layers=2)  # fmt: skip
        train_adapters(model, tokenizer, tmp_path / name, tmp_path / name / "a", config, progress=False)
    one, acc = _adapters(tmp_path / "one" / "a"), _adapters(tmp_path / "acc" / "a")
    assert all(np.allclose(np.array(one[k]), np.array(acc[k]), atol=1e-6) for k in one)
    assert any(float(mx.abs(one[k]).max()) > 0 for k in one if "lora_b" in k)  # an update happened


def test_accumulation_and_checkpointing_resume_exactly(tiny_model, tmp_path):
    config = TrainConfig(epochs=2, batch_size=2, grad_accumulation=2, learning_rate=5e-3, rank=4, num_layers=2,
                         checkpoint_every=1, grad_checkpoint=True)  # fmt: skip
    for run in ("whole", "cut"):
        write_train_dir(tmp_path / run / "train", 9)
    block = None
    model, tokenizer = load_model(tiny_model)
    block = type(model.layers[0]).__call__
    train_adapters(model, tokenizer, tmp_path / "whole/train", tmp_path / "whole/a", config, progress=False)
    assert type(model.layers[0]).__call__ is block  # gradient checkpointing is undone after training
    for steps in (3, None):  # step 3 is half an update: the checkpoint is the one after step 2
        model, tokenizer = load_model(tiny_model)
        cut = train_adapters(model, tokenizer, tmp_path / "cut/train", tmp_path / "cut/a", config, progress=False,
                             hooks=TrainHooks(before_step=stop_after(steps)))  # fmt: skip
    assert cut.resumed_at_step == 2 and cut.steps == 10
    expected, got = _adapters(tmp_path / "whole/a"), _adapters(tmp_path / "cut/a")
    assert all(mx.array_equal(expected[k], got[k]).item() for k in expected)
    # Gradient checkpointing recomputes what it does not keep: the same training, within float error.
    plain_dir = tmp_path / "plain"
    write_train_dir(plain_dir / "train", 9)
    model, tokenizer = load_model(tiny_model)
    train_adapters(model, tokenizer, plain_dir / "train", plain_dir / "a", replace(config, grad_checkpoint=False),
                   progress=False)  # fmt: skip
    plain = _adapters(plain_dir / "a")
    assert all(np.allclose(np.array(plain[k]), np.array(expected[k]), atol=1e-5) for k in plain)


@pytest.mark.parametrize("kind,checkpointing", [("lora", False), ("full", False), ("dora", True)])
def test_the_frozen_blocks_run_once_and_train_what_every_block_each_step_trains(
    tiny_model, tmp_path, monkeypatch, kind, checkpointing
):
    from slearn_mlx.training.blocks import FrozenStart

    calls = []
    compute = FrozenStart.compute
    monkeypatch.setattr(FrozenStart, "compute", lambda *a: calls.append(compute(*a)) or calls[-1])
    config = TrainConfig(epochs=3, batch_size=3, learning_rate=5e-3, rank=4, num_layers=1, fine_tune_type=kind,
                         grad_checkpoint=checkpointing)  # fmt: skip
    model, tokenizer = load_model(tiny_model)
    block = type(model.layers[0]).__call__
    write_train_dir(tmp_path / "once" / "train", 7)
    once = train_adapters(model, tokenizer, tmp_path / "once/train", tmp_path / "once/a", config, progress=False)
    assert type(model.layers[0]).__call__ is block  # the model runs whole again after training
    assert len(calls) == 1 and calls[0] is not None and calls[0].first == 1 and len(calls[0].states) == 7
    model, tokenizer = load_model(tiny_model)
    write_train_dir(tmp_path / "every" / "train", 7)
    # Too little room for the states: every block runs every step.
    every = train_adapters(model, tokenizer, tmp_path / "every/train", tmp_path / "every/a", config, progress=False,
                           hooks=TrainHooks(frozen_bytes=0))  # fmt: skip
    assert calls[-1] is None
    assert once.train_loss == pytest.approx(every.train_loss, rel=1e-4)
    expected, got = _adapters(tmp_path / "every/a"), _adapters(tmp_path / "once/a")
    assert expected.keys() == got.keys()
    assert all(np.allclose(np.array(expected[k]), np.array(got[k]), atol=1e-5) for k in expected)
    losses = [
        json.loads(line)["train_loss"] for line in (tmp_path / "once/train/losses.jsonl").read_text().splitlines()
    ]
    assert losses[-1] < losses[0]  # it trained


def test_skip_learned_leaves_out_pairs_the_model_already_writes_and_resumes_exactly(tiny_model, tmp_path):
    # Full fine-tuning: LoRA on the random tiny model learns too slowly to write a pair word for word.
    config = TrainConfig(epochs=8, batch_size=2, learning_rate=1e-2, num_layers=2, fine_tune_type="full",
                         skip_learned=True, checkpoint_every=1)  # fmt: skip
    rows = [chat_example(QAItem(str(i), f"What is item {i}?", "a" if i % 2 else "b")) for i in range(6)]
    for run in ("whole", "cut"):
        (tmp_path / run / "train").mkdir(parents=True)
        (tmp_path / run / "train" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, tokenizer = load_model(tiny_model)
    whole = train_adapters(model, tokenizer, tmp_path / "whole/train", tmp_path / "whole/a", config, progress=False)
    losses = [json.loads(line) for line in (tmp_path / "whole/train/losses.jsonl").read_text().splitlines()]
    pairs = [row["pairs"] for row in losses]
    assert pairs[0] == 6 and pairs[-1] < 6 and all(a >= b for a, b in zip(pairs, pairs[1:]))
    assert whole.steps < 8 * 3  # fewer steps than every pair in every epoch
    # Each epoch trains the pairs not learned at the end of the one before.
    for before, row in zip(losses, losses[1:]):
        assert row["pairs"] == 6 - before["learned"]
    stop = next(row for row in losses if row["pairs"] < 6)["step"] - 1  # inside the first shorter epoch
    for steps in (stop, None):
        model, tokenizer = load_model(tiny_model)
        cut = train_adapters(model, tokenizer, tmp_path / "cut/train", tmp_path / "cut/a", config, progress=False,
                             hooks=TrainHooks(before_step=stop_after(steps)))  # fmt: skip
    assert cut.resumed_at_step == stop and cut.steps == whole.steps
    expected, got = _adapters(tmp_path / "whole/a"), _adapters(tmp_path / "cut/a")
    assert all(mx.array_equal(expected[k], got[k]).item() for k in expected)


def test_pairs_marked_for_one_epoch_train_in_one_epoch_only(tiny_model, tmp_path):
    write_train_dir(tmp_path / "train", 9)
    rows = [json.loads(line) for line in (tmp_path / "train/train.jsonl").read_text().splitlines()]
    rows = [row | ({"epochs": 1} if i >= 3 else {}) for i, row in enumerate(rows)]  # six rehearsed once
    (tmp_path / "train/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, tokenizer = load_model(tiny_model)
    config = TrainConfig(epochs=3, batch_size=5, num_layers=1)
    summary = train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "a", config, progress=False)
    losses = [json.loads(line) for line in (tmp_path / "train/losses.jsonl").read_text().splitlines()]
    assert [row["pairs"] for row in losses] == [5, 5, 5]  # three every epoch, two of the six once each
    assert summary.steps == 3


def test_the_default_learning_rate_falls_with_the_models_width(tiny_model, tmp_path):
    from types import SimpleNamespace

    from slearn_mlx.training.checkpoint import already_trained
    from slearn_mlx.training.optim import auto_learning_rate

    rate = lambda width: auto_learning_rate(SimpleNamespace(args=SimpleNamespace(hidden_size=width)))  # noqa: E731
    assert rate(64) == rate(576) == 2e-4  # the tiny model and SmolLM2-135M
    assert rate(896) == pytest.approx(5.31e-5, rel=1e-2)  # Qwen2.5-0.5B: 2e-4 diverges there, 5e-5 trains
    assert rate(1536) == pytest.approx(1.05e-5, rel=1e-2) and rate(4096) == 1e-5
    # Unset, training uses it and records it where mlx-lm reads it; the run's settings keep "auto".
    model, tokenizer = load_model(tiny_model)
    write_train_dir(tmp_path / "train", 4)
    train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "a", TrainConfig(epochs=1, num_layers=1),
                   progress=False)  # fmt: skip
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert saved["learning_rate"] == 2e-4
    assert already_trained(tmp_path / "a", tmp_path / "train", TrainConfig(epochs=1, num_layers=1))


@pytest.mark.parametrize("how", ["raises", "stops"])
def test_training_ended_early_leaves_the_model_and_its_block_class_as_they_came(tiny_model, tmp_path, how):
    """An exception inside the loop (here from `before_step`) or a `before_step` that stops it: gradient checkpointing
    and the frozen blocks' switch are off the block class again, the model is in eval mode, and full fine-tuning's
    weights are the base's."""
    from mlx.utils import tree_flatten

    model, tokenizer = load_model(tiny_model)
    block = type(model.layers[0]).__call__
    base = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    write_train_dir(tmp_path / "train", 7)

    moved = []

    def before_step(done: int) -> bool:
        if done == 2:  # the weights have moved by now: the check below can fail
            moved.append(any(not np.array_equal(base[k], np.array(v)) for k, v in tree_flatten(model.parameters())))
            if how == "raises":
                raise RuntimeError("a bug in the middle of training")
        return done == 2

    # One of two blocks trains: the frozen blocks' switch goes on, checkpointing too.
    config = TrainConfig(epochs=2, batch_size=2, learning_rate=5e-2, num_layers=1, fine_tune_type="full",
                         grad_checkpoint=True)  # fmt: skip
    hooks = TrainHooks(before_step=before_step)
    if how == "raises":
        with pytest.raises(RuntimeError, match="a bug"):
            train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "a", config, progress=False, hooks=hooks)
    else:
        summary = train_adapters(model, tokenizer, tmp_path / "train", tmp_path / "a", config, progress=False,
                                 hooks=hooks)  # fmt: skip
        assert summary.stopped and summary.steps == 2 and str(summary) == "stopped after 2 steps"
        assert not (tmp_path / "a" / "adapters.safetensors").exists()
    assert type(model.layers[0]).__call__ is block and not model.training
    after = dict(tree_flatten(model.parameters()))
    assert moved == [True] and all(np.array_equal(base[k], np.array(after[k])) for k in base)


def test_lora_plus_moves_the_b_matrices_that_many_times_faster_and_resumes_exactly(tiny_model, tmp_path):
    """Adam's first update moves each weight by about its learning rate: with LoRA+ at 16, B (zero at the start)
    moves 16 times as far as with plain LoRA. Both optimizers' states come back from a checkpoint."""
    moved = {}
    for ratio in (1.0, 16.0):
        write_train_dir(tmp_path / str(ratio) / "train", 4)
        model, tokenizer = load_model(tiny_model)
        config = TrainConfig(epochs=1, batch_size=4, learning_rate=1e-3, rank=4, num_layers=2, lora_plus=ratio)
        train_adapters(model, tokenizer, tmp_path / str(ratio) / "train", tmp_path / str(ratio) / "a", config,
                       progress=False)  # fmt: skip
        weights = _adapters(tmp_path / str(ratio) / "a")
        moved[ratio] = np.mean([np.abs(np.array(v)).mean() for k, v in weights.items() if k.endswith("lora_b")])
    assert moved[16.0] / moved[1.0] == pytest.approx(16.0, rel=0.05)
    config = TrainConfig(epochs=2, batch_size=2, learning_rate=1e-3, rank=4, num_layers=2, lora_plus=8.0,
                         checkpoint_every=1)  # fmt: skip
    for run in ("whole", "cut"):
        write_train_dir(tmp_path / run / "train", 6)
    model, tokenizer = load_model(tiny_model)
    train_adapters(model, tokenizer, tmp_path / "whole/train", tmp_path / "whole/a", config, progress=False)
    for steps in (2, None):
        model, tokenizer = load_model(tiny_model)
        train_adapters(model, tokenizer, tmp_path / "cut/train", tmp_path / "cut/a", config, progress=False,
                       hooks=TrainHooks(before_step=stop_after(steps)))  # fmt: skip
    expected, got = _adapters(tmp_path / "whole/a"), _adapters(tmp_path / "cut/a")
    assert all(mx.array_equal(expected[k], got[k]).item() for k in expected)
    assert json.loads((tmp_path / "cut/a/adapter_config.json").read_text())["lora_plus"] == 8.0
