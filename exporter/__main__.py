"""``python -m exporter`` runs the exporter, like the ``connectycube-exporter`` command."""

import sys

from exporter.cli import main

sys.exit(main())
