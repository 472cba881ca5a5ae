"""``python -m meta_pipeline …`` is the same as the ``meta-pipeline`` command."""

import sys

from meta_pipeline.cli import main

sys.exit(main())
