"""Repository-wide pytest settings."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

# Scripts that start servers or UIs when imported are not test modules.
collect_ignore = ["knowledge_retention/app.py", "spaces_app/app.py"]
