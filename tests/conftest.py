import os
import sys

# The Triton kernels run on the CPU interpreter when there is no GPU. The variable must be set before
# triton is first imported (vqswitch.kernels imports it), so it is set here, before any test module.
if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "" or not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

if (torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") == "1"
        and not os.environ.get("VQSWITCH_FORCE_INTERPRET")):
    os.environ["TRITON_INTERPRET"] = "0"  # a GPU is here after all: run the kernels for real

sys.path.insert(0, os.path.dirname(__file__))  # tests/reference.py
# One intra-op thread: the tests' tensors are small, and a second OpenMP thread on a shared 2-core machine makes
# small ops wait on each other (measured: the fast tier's CPU time drops by a third). Tests that measure
# parallel behaviour set their own.
torch.set_num_threads(1)

from hubcache import offline_cache  # noqa: E402,F401  (pytest fixture for every test module)
