"""slearn-mlx: self-learning domain adaptation of local language models with MLX.

The model answers a QA set, grades its own answers, and a LoRA fine-tune runs only
on the pairs it got wrong.
"""

from slearn_mlx import _blas

# Must run before anything imports mlx: see _blas.py.
_blas.preload_openblas()

__version__ = "0.1.0"
