"""`python -m octomega ...` (and `torchrun -m octomega ...`): the octomega command."""

import sys

from octomega.cli import main

if __name__ == "__main__":  # the guard matters: dist_checkpointing and datatrove spawn processes that re-import
    sys.exit(main())
