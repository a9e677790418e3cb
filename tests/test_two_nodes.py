"""Many machines: two "nodes" of one process each (``torchrun --nnodes 2 --nproc-per-node 1``, a static
rendezvous on 127.0.0.1, node ranks 0 and 1 started as separate launches) give the single-process numbers,
for a classifier pair and a causal-LM pair through ``evaluate_pair(..., distributed=True)``."""

from __future__ import annotations

import math

import lm_fixtures as lm
import numpy as np
import pytest
from distributed import extraction as launch


@pytest.mark.slow
def test_two_nodes_equal_one_process(tmp_path, torchrun):
    ranks = torchrun("two-nodes", tmp_path, nproc=2, nnodes=2, timeout=420).ranks
    assert [r["node_rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    single = {"classifier": launch.run_case(*launch.CASES["uneven"]), "causal_lm": lm.run_case(*lm.CASES["uneven"])}
    keys = {"classifier": ("fss", "aoag", "krs", "mean_kl", "top1_agreement"),
            "causal_lm": ("krs", "fss", "aoag", "mean_kl", "js", "top1_agreement", "topk_overlap", "logprob_gap",
                          "teacher_perplexity", "student_perplexity")}
    for name, want in single.items():
        assert want["num_processes"] == 1
        for dist in ranks:  # every node returns the full result
            got = dist[name]
            assert got["num_processes"] == 2 and got["example_indices"] == list(range(want["num_examples"]))
            for key in keys[name]:
                assert math.isclose(got[key], want[key], rel_tol=1e-6, abs_tol=1e-12), (name, key)
            np.testing.assert_allclose(np.array(got["cross_layer_cka"]["matrix"], dtype=float),
                                       np.array(want["cross_layer_cka"]["matrix"], dtype=float), rtol=1e-6)
    assert ranks[0]["causal_lm"]["lm"]["num_tokens"] == single["causal_lm"]["lm"]["num_tokens"]
    np.testing.assert_allclose(ranks[1]["classifier"]["student_logits"], single["classifier"]["student_logits"], rtol=1e-6)
