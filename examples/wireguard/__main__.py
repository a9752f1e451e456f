"""``python examples/wireguard CONFIG --interface NAME``: see wireguard/cli.py."""
import os
import sys

if __package__ in (None, ""):
    # run as a directory: make the package importable as ``wireguard``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from wireguard.cli import main
else:
    from .cli import main

sys.exit(main())
