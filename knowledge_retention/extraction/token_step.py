r"""Per-token statistics of two causal LMs' next-token distributions, one pass over the vocabulary per block.

:func:`token_step` is the torch step behind
:class:`~knowledge_retention.token_agreement.TokenAgreementAccumulator` during extraction: for n counted
tokens it takes the teacher's and the student's logits (``(n, V)`` tensors, or the models' output layers as
callables ``(lo, hi) -> (hi - lo, V)``) and the true next tokens, and returns one value per token for
every requested measure (:data:`~knowledge_retention.token_agreement.TOKEN_MEASURES`):

=========  ==================================================  ==========================================
measure    keys returned (``(n,)`` each)                       what it needs per element of V
=========  ==================================================  ==========================================
``kl``     ``kl``, ``exp_neg_kl``                              both softmaxes and log-softmaxes
``js``     ``js``                                              the same, and the log of the mixture
``top1``   ``top1``, ``teacher_top1``, ``student_top1``        an argmax of each (ties: the lowest id)
``topk``   ``topk``                                            a top-k of each (only when ``top_k > 1``)
``nll``    ``teacher_nll``, ``student_nll``                    the temperature-1 log-softmaxes
=========  ==================================================  ==========================================

Nothing is computed twice: one softmax per model gives both the probabilities and the log-probabilities
(``log p = (z - max z) + log max p``), which at temperature 1 also serve the log-likelihoods; the
argmax and the top-k read each row once, ranking only the blocks of 256 ids whose maxima lead
(:func:`_top_k`, :func:`_argmax`); top-k runs only for ``top_k > 1`` (with ``k = 1`` the overlap is the
top-1 match). Every subset of measures gives the values of the full run, bit for bit.

Cost and memory. The logits are made by the output layer in *head blocks* of at most ``chunk`` rows
(:data:`HEAD_BUDGET` float32 values), of equal sizes: a matrix product is only as fast as the forward
pass's when it has enough rows (with a few rows per call, packing the whole ``(V, D)`` weight dominates
each call). The vocabulary maths then runs on *sub-blocks* of :data:`MATH_BUDGET` values, which stay in
the CPU's cache, with every ``(rows, V)`` temporary written into buffers allocated once per call
(``out=``, in-place ops). Memory is ``O(chunk * V)`` whatever n: never a ``(B, T, V)`` array.
``benchmarks/lm_cost.py`` measures the whole evaluation against the two bare forward passes, with this
step and with the one it replaced.

Precision. The (log-)softmaxes and the per-token sums over V are float32 (results agree with the step
before this module, and with a float64 NumPy reference, to float32 rounding); the caller
sums the per-token values in float64. The top-1/top-k matches are exact counts (float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

from ..token_agreement import MEASURE_KEYS, TOKEN_MEASURES, resolve_measures

__all__ = ["HEAD_BUDGET", "MATH_BUDGET", "TOKEN_MEASURES", "measure_keys", "record_step", "recorded_step",
           "resolve_measures", "row_blocks", "token_step"]

_KEYS: dict[str, tuple[str, ...]] = {**MEASURE_KEYS, "top1": ("top1", "teacher_top1", "student_top1")}
#: float32 logits per ``(chunk, V)`` head block: ``chunk = max(1, HEAD_BUDGET // V)`` rows (128 MiB a model:
#: 220 rows at V = 151,936, where fewer rows per matrix product cost more time per row).
HEAD_BUDGET = 1 << 25
#: float32 values per ``(rows, V)`` sub-block of the vocabulary maths (each temporary stays in cache; at least
#: 2 rows: a 1-row sum over V takes another reduction path, and its float32 rounding differs).
MATH_BUDGET = 1 << 18
_LARGEST_VOCAB = 1 << 18  # the first head block of a callable, made before V is known, assumes V <= 262,144
_LOG2 = math.log(2.0)
_FLOAT32_KEYS = ("exp_neg_kl", "kl", "js", "teacher_nll", "student_nll")
_INDEX_KEYS = ("teacher_top1", "student_top1")

Logits = torch.Tensor | Callable[[int, int], torch.Tensor]


def measure_keys(measures: Iterable[str] | str | None = None) -> tuple[str, ...]:
    """The keys :func:`token_step` returns for these measures.

    Example:
        >>> measure_keys(["kl", "nll"])
        ('exp_neg_kl', 'kl', 'teacher_nll', 'student_nll')
    """
    return tuple(key for m in resolve_measures(measures) for key in _KEYS[m])


def token_step(
    teacher_logits: Any,
    student_logits: Any,
    targets: torch.Tensor,
    *,
    temperature: float,
    top_k: int,
    chunk: int | None = None,
    measures: Iterable[str] | str | None = None,
) -> dict[str, torch.Tensor]:
    """Per-token statistics of the requested measures, ``(n,)`` each.

    Args:
        teacher_logits: ``(n, V)`` logits, or a callable ``(lo, hi) -> (hi - lo, V)`` (the teacher's
            output layer applied to the final hidden states of rows ``lo:hi``), called once per head block.
        student_logits: the same for the student (same V).
        targets: ``(n,)`` the true next token ids.
        temperature: softmax temperature of KL and JS (the log-likelihoods are always at temperature 1).
        top_k: the k of the top-k overlap.
        chunk: rows per head block (default ``max(1, HEAD_BUDGET // V)``).
        measures: which of :data:`~knowledge_retention.token_agreement.TOKEN_MEASURES` to compute (default: all).

    Returns:
        ``{key: (n,)}`` for the keys of :func:`measure_keys`: float32 ``kl``/``exp_neg_kl``/``js``/
        ``teacher_nll``/``student_nll`` (KL clamped at 0, JS in bits clamped to [0, 1]); float64 ``top1``
        (0/1) and ``topk`` (overlap / k); int64 ``teacher_top1``/``student_top1`` argmax ids.
    """
    wanted = resolve_measures(measures)
    n = int(targets.shape[0])
    device = targets.device
    out: dict[str, torch.Tensor] = {}
    for key in measure_keys(wanted):
        dtype = torch.float32 if key in _FLOAT32_KEYS else torch.long if key in _INDEX_KEYS else torch.float64
        out[key] = torch.empty(n, dtype=dtype, device=device)
    get_s = _blocks(student_logits)
    maths: _BlockMaths | None = None
    # The outputs above are allocated once and filled block by block: small tensors kept between the
    # (chunk, V) temporaries would pin the heap above them and RSS would grow with n.
    for lo, hi, zt in row_blocks(teacher_logits, n, chunk):
        zs = get_s(lo, hi)
        if maths is None:
            maths = _BlockMaths(wanted, int(zt.shape[-1]), zt.device, temperature=temperature, top_k=top_k)
        maths.run(zt, zs, targets[lo:hi].to(zt.device), out, lo)
        del zt, zs
    return out


def _first_rows() -> int:
    """Rows of a callable's first head block (within :data:`HEAD_BUDGET` for any V up to 262,144)."""
    return max(1, HEAD_BUDGET // _LARGEST_VOCAB)


def _blocks(logits: Logits) -> Callable[[int, int], torch.Tensor]:
    if callable(logits):
        return logits
    return lambda lo, hi: logits[lo:hi].float()


class _BlockMaths:
    """The vocabulary maths of one head block, sub-block by sub-block, in buffers made once."""

    def __init__(self, wanted: tuple[str, ...], vocab: int, device: torch.device, *, temperature: float,
                 top_k: int) -> None:
        self.kl, self.js, self.top1, self.nll = ("kl" in wanted), ("js" in wanted), ("top1" in wanted), ("nll" in wanted)
        self.topk = "topk" in wanted
        self.temperature, self.top_k = float(temperature), int(top_k)
        self.rows = max(2, MATH_BUDGET // vocab)
        dist = self.kl or self.js
        need = {"lt": dist or self.nll, "ls": dist or self.nll, "pt": dist or self.nll, "ps": dist or self.nll, "diff": dist,
                "mix": self.js, "scaled": dist and self.temperature != 1.0}
        self.buf = {name: torch.empty((self.rows, vocab), dtype=torch.float32, device=device)
                    for name, used in need.items() if used}

    def run(self, zt: torch.Tensor, zs: torch.Tensor, y: torch.Tensor, out: dict[str, torch.Tensor], offset: int) -> None:
        for a in range(0, int(zt.shape[0]), self.rows):
            b = min(int(zt.shape[0]), a + self.rows)
            self._sub_block(zt[a:b], zs[a:b], y[a:b].unsqueeze(1), out, offset + a, offset + b)

    def _sub_block(self, zt: torch.Tensor, zs: torch.Tensor, y: torch.Tensor, out: dict[str, torch.Tensor],
                   lo: int, hi: int) -> None:
        m = int(zt.shape[0])
        buf = {name: b[:m] for name, b in self.buf.items()}
        dist = self.kl or self.js
        # One way of making each log-probability (even where a cheaper one would do, e.g. the student's
        # probabilities serve JS only) keeps every subset of measures equal to the full run's, bit for bit.
        if self.nll and (not dist or self.temperature != 1.0):  # temperature-1 log-probs of their own
            out["teacher_nll"][lo:hi] = _probs(zt, 1.0, buf["pt"], buf["lt"])[1].gather(1, y).squeeze(1).neg_()
            out["student_nll"][lo:hi] = _probs(zs, 1.0, buf["ps"], buf["ls"])[1].gather(1, y).squeeze(1).neg_()
        if dist:
            pt, lt = _probs(zt, self.temperature, buf["pt"], buf["lt"], buf.get("scaled"))
            ps, ls = _probs(zs, self.temperature, buf["ps"], buf["ls"], buf.get("scaled"))
            if self.nll and self.temperature == 1.0:
                out["teacher_nll"][lo:hi] = lt.gather(1, y).squeeze(1).neg_()
                out["student_nll"][lo:hi] = ls.gather(1, y).squeeze(1).neg_()
            self._divergences(pt, lt, ps, ls, buf, out, lo, hi)
        if self.topk and self.top_k > 1:
            (vt, kt), (vs, ks) = _top_k(zt, self.top_k), _top_k(zs, self.top_k)
            out["topk"][lo:hi] = (kt.unsqueeze(2) == ks.unsqueeze(1)).any(dim=2).sum(dim=1).double() / self.top_k
            if self.top1:  # the top-k's first, but a tie at the top goes to the lowest id (argmax's)
                t1, s1 = _lowest_argmax(zt, vt, kt), _lowest_argmax(zs, vs, ks)
        elif self.top1 or self.topk:
            t1, s1 = _argmax(zt), _argmax(zs)
            if self.topk:  # with k = 1 the overlap is the top-1 match
                out["topk"][lo:hi] = t1 == s1
        if self.top1:
            out["top1"][lo:hi] = t1 == s1  # exact counts: float64
            out["teacher_top1"][lo:hi] = t1
            out["student_top1"][lo:hi] = s1

    def _divergences(self, pt: torch.Tensor, lt: torch.Tensor, ps: torch.Tensor, ls: torch.Tensor,
                     buf: dict[str, torch.Tensor], out: dict[str, torch.Tensor], lo: int, hi: int) -> None:
        """KL(p_t || p_s) = sum p_t (log p_t - log p_s) and JS in bits, from the (log-)probabilities (float32
        sums over V: ``(a * b).sum(-1)``, what ``torch.linalg.vecdot`` computes, without its product temporary)."""
        diff = buf["diff"]
        if self.kl:
            kl = torch.sub(lt, ls, out=diff).mul_(pt).sum(-1).clamp_(min=0.0)
            out["kl"][lo:hi] = kl
            out["exp_neg_kl"][lo:hi] = kl.neg_().exp_()
        if self.js:
            mix = torch.logaddexp(lt, ls, out=buf["mix"]).sub_(_LOG2)  # log of the mixture (p + q) / 2
            js = torch.sub(lt, mix, out=diff).mul_(pt).sum(-1).mul_(0.5)
            js += torch.sub(ls, mix, out=diff).mul_(ps).sum(-1).mul_(0.5)
            js /= _LOG2
            out["js"][lo:hi] = js.clamp_(0.0, 1.0)


def _probs(z: torch.Tensor, temperature: float, p: torch.Tensor, logp: torch.Tensor,
           scaled: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax and log-softmax of ``z / temperature`` into two buffers: ``p = softmax(z)`` and
    ``log p = (z - max z) + log max p`` (``max p = 1 / sum exp(z - max z)``: the log of the sum a log-softmax
    subtracts): one softmax and three light passes, cheaper than a log-softmax and an exp (the sum is not
    made twice)."""
    if temperature != 1.0:
        assert scaled is not None
        z = torch.div(z, temperature, out=scaled)
    top = z.amax(dim=-1, keepdim=True)
    torch.softmax(z, -1, out=p)
    return p, torch.sub(z, top, out=logp).add_(p.amax(dim=-1, keepdim=True).log_())


#: width of the blocks whose maxima :func:`_top_k` and :func:`_argmax` rank first (wide rows only)
_RANK_BLOCK = 256


def _block_maxima(z: torch.Tensor) -> torch.Tensor:
    """``(m, ceil(V / _RANK_BLOCK))`` the largest logit of each block of :data:`_RANK_BLOCK` ids of each row."""
    m, vocab = int(z.shape[0]), int(z.shape[1])
    whole = vocab // _RANK_BLOCK * _RANK_BLOCK
    maxima = z[:, :whole].reshape(m, whole // _RANK_BLOCK, _RANK_BLOCK).amax(dim=-1)
    if whole < vocab:
        maxima = torch.cat([maxima, z[:, whole:].amax(dim=-1, keepdim=True)], dim=1)
    return maxima


def _top_k(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``z.topk(k, dim=-1)`` of a wide row read once: the k largest values of a row lie in the k blocks with
    the largest maxima (each holds one value at least as large), so only those k blocks are ranked
    (a fifth of a full top-k's time at V = 151,936). Narrow rows go to :meth:`torch.Tensor.topk`."""
    vocab = int(z.shape[1])
    if vocab < 16 * k * _RANK_BLOCK or not z.is_contiguous():
        return z.topk(k, dim=-1)
    ids, values = _blocks_of(z, _block_maxima(z).topk(k, dim=-1).indices)
    top, where = values.topk(k, dim=-1)
    return top, ids.gather(1, where)


def _argmax(z: torch.Tensor) -> torch.Tensor:
    """``z.argmax(dim=-1)`` (the lowest id among equal largest values) of a wide row: the first block
    holding the row's largest value, then the first position of that value in it."""
    vocab = int(z.shape[1])
    if vocab < 16 * _RANK_BLOCK or not z.is_contiguous():
        return z.argmax(dim=-1)
    # the first block reaching the maximum, then the first position of the maximum in it
    ids, values = _blocks_of(z, _block_maxima(z).argmax(dim=-1, keepdim=True))
    return ids.gather(1, values.argmax(dim=-1, keepdim=True)).squeeze(1)


def _blocks_of(z: torch.Tensor, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ids and logits of the blocks ``(m, b)`` of each row, ``(m, b * _RANK_BLOCK)`` each, in block order
    (the ids past V of a narrower last block hold ``-inf``)."""
    vocab = int(z.shape[1])
    ids = (blocks.unsqueeze(2) * _RANK_BLOCK + torch.arange(_RANK_BLOCK, device=z.device)).reshape(z.shape[0], -1)
    values = z.gather(1, ids.clamp(max=vocab - 1)).masked_fill_(ids >= vocab, float("-inf"))
    return ids, values


def _lowest_argmax(z: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Each row's argmax from its top-k ``(values, indices)`` (k >= 2): ``indices[:, 0]``, except in rows whose
    two largest values are equal, where :func:`torch.argmax` (the first, i.e. lowest, id) decides."""
    top = indices[:, 0]
    tied = values[:, 1] == values[:, 0]
    if bool(tied.any()):
        top = top.clone()
        top[tied] = z[tied].argmax(dim=-1)
    return top


# ------------------------------------------------------------------------------ a recorded teacher
def row_blocks(logits: Any, n: int, chunk: int | None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(lo, hi, (hi - lo, V) float32 block)`` over n rows in head blocks of at most ``chunk`` rows (default
    ``HEAD_BUDGET // V``), of equal sizes (a short last block would cost more per row). V is read from a
    tensor's shape or a callable's ``vocab_size`` attribute; a callable without one tells V by its first
    block, made with :func:`_first_rows` rows."""
    get = _blocks(logits)
    vocab = int(logits.shape[-1]) if not callable(logits) else getattr(logits, "vocab_size", None)
    lo = 0
    while lo < n:
        if chunk is None and vocab is None:
            z = get(lo, min(n, lo + _first_rows()))
            vocab = int(z.shape[-1])
        else:
            limit = chunk if chunk is not None else max(1, HEAD_BUDGET // max(1, int(vocab or 1)))
            blocks = -(-(n - lo) // limit)
            z = get(lo, lo + -(-(n - lo) // blocks))
        hi = lo + int(z.shape[0])
        yield lo, hi, z
        lo = hi


def record_step(teacher_logits: Any, targets: torch.Tensor, *, k: int, chunk: int | None = None) -> dict[str, torch.Tensor]:
    """What a recording keeps of the teacher for n counted tokens (at temperature 1).

    Returns:
        ``topk_ids`` ``(n, k)`` int32, most probable first (equal log-probabilities by id, and the first id the
        lowest of the largest, as :func:`torch.argmax`); ``topk_logprobs`` ``(n, k)`` float32; ``tail_logmass``
        ``(n,)`` float32, the log of the mass outside the k ids (``-inf`` when k = V), summed over them;
        ``target_logprob`` ``(n,)`` float32, the log-probability of the true next token.
    """
    n = int(targets.shape[0])
    out = {"topk_ids": torch.empty((n, k), dtype=torch.int32), "topk_logprobs": torch.empty((n, k)),
           "tail_logmass": torch.empty(n), "target_logprob": torch.empty(n)}
    for lo, hi, z in row_blocks(teacher_logits, n, chunk):
        lt = torch.log_softmax(z, -1)
        y = targets[lo:hi].to(z.device).unsqueeze(1)
        out["target_logprob"][lo:hi] = lt.gather(1, y).squeeze(1).cpu()
        values, ids = lt.topk(k, dim=-1)
        top = lt.argmax(dim=-1)  # the lowest id among the largest: it must come first
        missing = (ids != top.unsqueeze(1)).all(dim=1)
        if bool(missing.any()):  # a tie at the top wider than what topk kept: swap in the lowest id
            ids[missing, -1] = top[missing]
        ids, values = _sort_by_value_then_id(ids, values)
        out["topk_ids"][lo:hi] = ids.to(torch.int32).cpu()
        out["topk_logprobs"][lo:hi] = values.cpu()
        out["tail_logmass"][lo:hi] = lt.scatter_(1, ids, float("-inf")).logsumexp(dim=-1).cpu()
    return out


def _sort_by_value_then_id(ids: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    by_id = ids.argsort(dim=1, stable=True)
    ids, values = ids.gather(1, by_id), values.gather(1, by_id)
    by_value = (-values).argsort(dim=1, stable=True)
    return ids.gather(1, by_value), values.gather(1, by_value)


def recorded_step(
    recording: Mapping[str, Any],
    student_logits: Any,
    targets: torch.Tensor,
    *,
    top_k: int,
    chunk: int | None = None,
    measures: Iterable[str] | str | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`token_step` against a recorded teacher: the maths of
    :func:`~knowledge_retention.token_agreement.recorded_token_statistics` (KL and JS over the k recorded
    tokens and one tail bucket, lower bounds; top-1 exact; top-k for ``top_k <= k``, else NaN), in torch,
    the student's logits made and used one head block at a time.

    Args:
        recording: ``topk_ids`` ``(n, k)``, ``topk_logprobs`` ``(n, k)``, ``tail_logmass`` and
            ``target_logprob`` ``(n,)`` (a :class:`~knowledge_retention.extraction.recorded.RecordedBatch`'s
            arrays, or :func:`record_step`'s).
        student_logits: ``(n, V)`` logits or a callable ``(lo, hi) -> (hi - lo, V)``.
        targets: ``(n,)`` the true next tokens.
        top_k: the k of the top-k overlap.
        chunk: rows per head block.
        measures: which measures to compute (default: all).

    Returns:
        The keys of :func:`measure_keys` (float64 here: the bucket sums are small) and ``teacher_tail_mass``.
    """
    wanted = resolve_measures(measures)
    n = int(targets.shape[0])
    ids_all = torch.as_tensor(recording["topk_ids"]).long()
    top_all = torch.as_tensor(recording["topk_logprobs"]).double()
    tail_all = torch.as_tensor(recording["tail_logmass"]).double()
    out: dict[str, torch.Tensor] = {key: torch.empty(n, dtype=torch.long if key in _INDEX_KEYS else torch.float64)
                                    for key in measure_keys(wanted)}
    out["teacher_tail_mass"] = tail_all.exp()
    if "nll" in wanted:
        out["teacher_nll"] = -torch.as_tensor(recording["target_logprob"]).double()
    for lo, hi, zs in row_blocks(student_logits, n, chunk):
        ids = ids_all[lo:hi].to(zs.device)
        if "top1" in wanted:
            out["teacher_top1"][lo:hi] = ids_all[lo:hi, 0]
            out["student_top1"][lo:hi] = zs.argmax(dim=-1).cpu()
            out["top1"][lo:hi] = (out["teacher_top1"][lo:hi] == out["student_top1"][lo:hi]).double()
        if "topk" in wanted:
            if top_k > ids.shape[1]:
                out["topk"][lo:hi] = float("nan")
            else:
                ks = zs.topk(top_k, dim=-1).indices
                out["topk"][lo:hi] = ((ids[:, :top_k].unsqueeze(2) == ks.unsqueeze(1)).any(dim=2).sum(dim=1).double()
                                      / top_k).cpu()
        ls = torch.log_softmax(zs, -1)
        if "nll" in wanted:
            out["student_nll"][lo:hi] = -ls.gather(1, targets[lo:hi].to(zs.device).unsqueeze(1)).squeeze(1).double().cpu()
        if "kl" in wanted or "js" in wanted:
            q_top = ls.gather(1, ids).double()
            q_tail = ls.scatter_(1, ids, float("-inf")).double().logsumexp(dim=-1)
            p = torch.cat([top_all[lo:hi], tail_all[lo:hi, None]], dim=1).to(zs.device)
            q = torch.cat([q_top, q_tail[:, None]], dim=1)
            if "kl" in wanted:
                kl = _kl_rows(p, q).clamp_(min=0.0)
                out["kl"][lo:hi], out["exp_neg_kl"][lo:hi] = kl.cpu(), kl.neg().exp().cpu()
            if "js" in wanted:
                mix = torch.logaddexp(p, q) - _LOG2
                out["js"][lo:hi] = ((0.5 * _kl_rows(p, mix) + 0.5 * _kl_rows(q, mix)) / _LOG2).clamp_(0.0, 1.0).cpu()
    return out


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-row KL(p || q) from log-probabilities, with 0 log 0 = 0."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros((), dtype=p.dtype, device=p.device)).sum(dim=1)
