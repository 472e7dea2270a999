import os
import sys

from trainer.cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # A torchrun rank, its process group destroyed: end here. Python's own teardown
    # would destroy the communication backend's C++ objects still referenced by the
    # sharded modules (their device mesh) in an arbitrary order, and gloo's threads
    # sometimes abort the process ("terminate called without an active exception")
    # after a run that finished and saved everything.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
