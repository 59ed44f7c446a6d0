"""What is there only to be fast: CPU kernels below `layers/`, each with the contract of the torch op it replaces.

- gemm.py             `linear` / `Linear`: F.linear / nn.Linear on oneDNN where MKL is slow (the
                      GEMM rule and its one override, `NANOFORMER_GEMM`), weights packed once per
                      `generate` (`frozen_weights`)
- dropout.py          `dropout` / `Dropout`: F.dropout / nn.Dropout with a cheap CPU mask
- packing.py          `TokenPacking`: token-wise sublayers on the real tokens of a padded batch
- cross_entropy.py    `linear_cross_entropy`: the output layer and its loss without the logits
- argmax.py           `last_dim_argmax`: argmax over the last dim (greedy's next token) in two
                      vectorised passes
- grouped_attention.py  beams of one sentence attend to one copy of its memory
- cpu.py              the CPU's vendor and model, read once

Nothing here runs at import. The layers call these through plain functions; a reader of the
Transformer can read `layers/` as if they were torch's own ops.
"""
