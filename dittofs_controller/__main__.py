"""``python -m dittofs_controller`` and the ``dittofs-controller`` console script."""

import sys

from dittofs_controller.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
