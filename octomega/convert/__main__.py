import sys

from octomega.convert.cli import main

if __name__ == "__main__":  # guard: dist_checkpointing's writer may re-import the main module
    sys.exit(main())
