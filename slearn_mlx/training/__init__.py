"""Stage 4, training: what trains (`config`), the pairs in batches (`batches`), the loss (`loss`) and the KL term on
anchor pairs (`anchors`), what changes how blocks run (`blocks`), LoRA/DoRA/full layers (`layers`), the optimizer
(`optim`), what training leaves on disk (`checkpoint`) and the loop (`loop`)."""
