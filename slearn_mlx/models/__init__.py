"""Models: where they live and which install by name (`store`), loading them (`load`), the GGUF importer (`gguf`,
with the tokenizer rebuild in `tokenizer`), installing releases (`fetch`), checking an import against the file
(`check`), the vocabulary projection at chosen positions (`heads`) and the CPU's fast kernels (`kernels`)."""
