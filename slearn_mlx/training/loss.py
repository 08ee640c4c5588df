"""The training loss: mean cross-entropy over the answer tokens, the prompt masked, as mlx-lm's `default_loss`."""

from __future__ import annotations

from slearn_mlx import distributed
from slearn_mlx.models.heads import logits_at
from slearn_mlx.training.batches import batch_order, make_batch


def answer_logits(model, tokens, positions):
    """The logits that predict the answer tokens of a batch (`positions` as `make_batch` gives them)."""
    return logits_at(model, tokens[:, :-1], positions)


def answer_loss(model, tokens, bounds, positions, scored, *, mastery: bool = False):
    """mlx-lm's `default_loss`: mean cross-entropy over the answer tokens, prompt masked (`bounds` is what
    default_loss takes; `positions` and `scored` say the same per token). With `mastery`, also whether each
    row's every answer token is already the model's most likely one: the pair is learned word for word."""
    import mlx.core as mx
    import mlx.nn as nn

    logits = answer_logits(model, tokens, positions)
    targets = mx.take_along_axis(tokens, positions + 1, axis=1)
    ce = nn.losses.cross_entropy(logits, targets) * scored
    n_tokens = scored.sum()
    # A batch whose answers max_seq_length cut off entirely has loss and gradient 0, not 0/0.
    loss = ce.astype(mx.float32).sum() / mx.maximum(n_tokens, 1)
    if not mastery:
        return loss, n_tokens
    hit = (mx.argmax(logits, axis=-1) == targets) | ~scored
    return loss, n_tokens, mx.stop_gradient(hit.all(axis=1))


def mean_loss(model, dataset, batch_size: int, max_seq_length: int) -> float:
    """Mean loss per answer token over a dataset, without training; in a distributed group, batch i is read by
    rank i % N and the sums are added up."""
    import mlx.core as mx

    total, count = mx.array(0.0), mx.array(0)
    for i, indices in enumerate(batch_order(dataset, batch_size)):
        if i % distributed.size() != distributed.rank():
            continue
        loss, n = answer_loss(model, *make_batch(dataset, indices, max_seq_length))
        total, count = total + loss * n, count + n
        mx.eval(total, count)
    if distributed.size() > 1:
        with distributed.collective():
            total, count = distributed.all_sum(total), distributed.all_sum(count)
            mx.eval(total, count)
    return (total / count).item()


def token_share(scored, has_rows: bool):
    """This rank's share of its batch's answer tokens (`scored`: the positions it scores; all ranks together: 1),
    as an array for the compiled step: the ranks' gradients, weighted by it and summed, are one process's."""
    import mlx.core as mx

    if distributed.size() == 1:
        return mx.array(1.0)
    n_local = scored.sum() if has_rows else mx.array(0)
    with distributed.collective():
        n_total = distributed.all_sum(n_local)
        share = n_local.astype(mx.float32) / mx.maximum(n_total, 1).astype(mx.float32)
        mx.eval(share)
    return share
