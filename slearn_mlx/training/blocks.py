"""What training changes about how the transformer blocks run: gradient checkpointing, and the frozen blocks' work
done once per pair instead of once per epoch. Both replace the block class's `__call__` for one model's blocks, and
`block_call` puts it back whatever happens.

Gradient checkpointing (`checkpointed`) recomputes each block's activations in the backward pass instead of keeping
them, as `mlx_lm.lora --grad-checkpoint` does.

Training changes only the top `num_layers` blocks (their LoRA layers, or their weights). The blocks below
never change, so what they compute for a pair is the same in every epoch. `FrozenStart` runs them once over
every pair before training and keeps the hidden state that enters the first trained block; during training
the model then starts there: the frozen blocks let their input through untouched, and the first trained block
reads the kept state instead. On the default model (30 blocks, 16 trained) every epoch after the first skips
14 of the 30 blocks' forward pass (BENCHMARKS.md, "Training: padding and the frozen blocks").

The switch is made on the block class, for this model's blocks only and only while a state is set
(`FrozenStart.feeding`), so validation, answering and every other model in the process run as before.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np


@contextmanager
def block_call(model, make_call: Callable[[Callable], Callable]) -> Iterator[None]:
    """Inside, the class of `model`'s blocks runs `make_call(plain)` as its `__call__` (`plain`: the one it had);
    after, the one it had, also when an exception ends the block."""
    block = type(model.layers[0])
    plain = block.__call__
    block.__call__ = make_call(plain)
    try:
        yield
    finally:
        block.__call__ = plain


def checkpointed(model):
    """Gradient checkpointing on `model`'s blocks, for the length of a `with` block."""
    import mlx.core as mx

    def make_call(plain):
        def call(layer, *args, **kwargs):
            def inner(params, *args, **kwargs):
                layer.update(params)
                return plain(layer, *args, **kwargs)

            return mx.checkpoint(inner)(layer.trainable_parameters(), *args, **kwargs)

        return call

    return block_call(model, make_call)


# The kept states stay under this many bytes by default; a larger training set trains without them.
MAX_BYTES = 2 * 2**30
# Pairs per forward pass while the states are computed: in a fixed order (by length), so a resumed run
# computes exactly the same states.
BATCH = 8


class FrozenStart:
    """The hidden state entering block `first`, for every pair of a training set."""

    def __init__(self, model, first: int, states: list) -> None:
        self.model, self.first, self.states = model, first, states
        self._hidden = None

    @classmethod
    def compute(
        cls, model, dataset, first: int, max_seq_length: int, max_bytes: int = MAX_BYTES
    ) -> "FrozenStart | None":
        """Run blocks [0, first) over every pair of `dataset` (tokens cut to max_seq_length); None when there are
        no frozen blocks, the states would not fit in `max_bytes`, or the model's blocks are not all of one class."""
        import mlx.core as mx

        layers = model.layers
        if first <= 0 or len({type(layer) for layer in layers}) != 1:
            return None
        lengths = [min(len(dataset[i][0]), max_seq_length) for i in range(len(dataset))]
        width = getattr(getattr(model, "args", None), "hidden_size", None)
        if width is None or not hasattr(model, "model") or sum(lengths) * width * 4 > max_bytes:
            return None
        start = cls(model, first, [None] * len(dataset))
        order = sorted(range(len(dataset)), key=lambda i: (lengths[i], i))
        recorded: list = []
        with block_call(model, start._switch(recorded)):
            for k in range(0, len(order), BATCH):
                group = order[k : k + BATCH]
                n = max(lengths[i] for i in group)
                tokens = np.zeros((len(group), n), np.int32)
                for row, i in enumerate(group):
                    tokens[row, : lengths[i]] = dataset[i][0][: lengths[i]]
                model.model(mx.array(tokens))
                hidden = recorded.pop()
                for row, i in enumerate(group):
                    start.states[i] = hidden[row, : lengths[i]]
                mx.eval([start.states[i] for i in group])  # each its own copy: the batch's array goes
        return start

    def batch_states(self, indices: list[int], width: int):
        """The kept states of the pairs at `indices`, zero-padded to `width` positions: the model's input for
        a batch whose tokens are `width` + 1 wide."""
        import mlx.core as mx

        rows = []
        for i in indices:
            state = self.states[i][:width]
            pad = width - state.shape[0]
            rows.append(mx.pad(state, [(0, pad), (0, 0)]) if pad else state)
        return mx.stack(rows)

    @contextmanager
    def feeding(self, hidden) -> Iterator[None]:
        """While inside, the model starts at block `first` from `hidden` (rows, positions, width)."""
        self._hidden = hidden
        try:
            yield
        finally:
            self._hidden = None

    def installed(self):
        """The switch on the block class, for the length of a `with` block (a training run)."""
        return block_call(self.model, self._switch(None))

    def _switch(self, recorded: list | None) -> Callable[[Callable], Callable]:
        """The block call that switches. With `recorded`, the states are being computed: blocks below `first` run,
        the input of block `first` is appended to `recorded`, and the blocks from `first` on are skipped."""
        ids = {id(layer): k for k, layer in enumerate(self.model.layers)}
        first = self.first

        def make_call(plain):
            def call(layer, x, *args, **kwargs):
                k = ids.get(id(layer))
                if k is None:  # another model's block
                    return plain(layer, x, *args, **kwargs)
                if recorded is not None:
                    if k == first:
                        recorded.append(x)
                    return plain(layer, x, *args, **kwargs) if k < first else x
                if self._hidden is None:  # not training: the whole model runs
                    return plain(layer, x, *args, **kwargs)
                if k < first:
                    return x
                return plain(layer, self._hidden if k == first else x, *args, **kwargs)

            return call

        return make_call
