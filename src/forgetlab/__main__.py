"""``python -m forgetlab`` runs the CLI."""

import sys

from forgetlab.cli import main

if __name__ == "__main__":  # worker processes (spawn) import this module too
    sys.exit(main())
