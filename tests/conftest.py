"""Test-wide settings.

The tests use tiny models, for which one thread is as fast as two, and on a busy machine
two threads per process oversubscribe the cores and make small steps many times slower.
"""

import torch

torch.set_num_threads(1)
