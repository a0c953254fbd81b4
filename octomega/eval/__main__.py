"""`python -m octomega.eval ...` = `octomega eval ...`."""
import sys

from octomega.eval.cli import main

sys.exit(main())
