import os
import sys

from trainer.cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a torchrun rank, its group destroyed
    from trainer.distributed import end_process

    end_process(code)
sys.exit(code)
