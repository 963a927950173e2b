"""``python -m fxquant``: the ``fxquant`` command line without installing its entry point."""

import sys

from fxquant.cli import main

if __name__ == "__main__":
    sys.exit(main())
