"""GPU tests check correctness: one launch setting per autotuned kernel, so that compiling stays within minutes."""

import os

os.environ.setdefault("HF_RECURRENT_AUTOTUNE", "0")
