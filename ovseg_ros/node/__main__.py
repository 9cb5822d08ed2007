"""``python -m ovseg_ros.node``: run the node (same as the ``ovseg_node`` entry point)."""
import sys

from .process import main

sys.exit(main())
