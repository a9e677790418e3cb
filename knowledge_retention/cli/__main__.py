"""``python -m knowledge_retention.cli`` (and ``accelerate launch -m knowledge_retention.cli``)."""

import sys

from .main import main

sys.exit(main())
