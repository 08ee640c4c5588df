"""`python -m slearn_mlx` is the `slearn` command."""

from slearn_mlx.cli import main

main()
