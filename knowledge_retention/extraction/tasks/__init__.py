"""What a task changes in extraction, one module per task.

* :mod:`.causal_lm` - causal language models (``task="causal-lm"``): which positions are counted
  (every next token that is a real token of the text), token-level hidden states for FSS, the
  token-level agreement accumulator, teacher-generated continuations, and the same-vocabulary check.

The classification / sentence-level path (pooled hidden states, per-example logits) stays in
:mod:`knowledge_retention.extraction.evaluator` and :mod:`knowledge_retention.extraction.streams`.
"""

from __future__ import annotations

__all__ = ["causal_lm"]
