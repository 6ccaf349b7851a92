"""`python -m evolvedirector.launch` with PyTorch's deterministic algorithms, for the GPU
resume test: on a GPU some kernels (the backward of memory-efficient attention, cuBLAS's split
reductions) add in a varying order unless told not to, and that test compares weights bit for
bit. cuBLAS also needs CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment."""

import torch

from evolvedirector.launch import main

if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    main()
