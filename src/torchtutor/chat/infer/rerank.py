"""MMI reranking: pick, among candidate replies, one that says something about the input.

A seq2seq chatbot trained by maximum likelihood learns that "i don t know ." fits almost any
input, so greedy and beam search say it to everyone. Li et al. (2016, "A Diversity-Promoting
Objective Function for Neural Conversation Models") rerank candidates by mutual information
instead: a reply r to a query q scores

    log p(r | q)  +  mmi_weight * log p(q | r)  +  length_bonus * |r|

where p(q | r) comes from a *backward* model trained on the same pairs turned around (reply ->
query; `chat train` trains it into RUN/backward). A generic reply predicts no particular query,
so its log p(q | r) is low; a reply that could only follow this query scores high. The
candidates come from beam search's finished hypotheses plus sampled replies (more varied).

Both scores are read from one teacher-forced pass per model over all candidates of a batch.
"""

from __future__ import annotations

import torch

from torchtutor.chat.data.vocab import EOS, PAD
from torchtutor.chat.model import Seq2Seq
from torchtutor.runtime.device import device_of

Hypothesis = tuple[list[int], float]   # token ids (EOS included when reached), log p(r | q)



def _padded(rows: list[list[int]], device: torch.device) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [PAD] * (width - len(row)) for row in rows],
                        dtype=torch.long, device=device).t()


def sequence_log_probs(model: Seq2Seq, sources: list[list[int]], targets: list[list[int]],
                       chunk: int = 256) -> list[float]:
    """log p(target | source) for each pair (ids with EOS), teacher-forced, `chunk` at a time."""
    device = device_of(model)
    out: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(sources), chunk):
            src, tgt = sources[start:start + chunk], targets[start:start + chunk]
            lengths = torch.tensor([len(s) for s in src], dtype=torch.long)
            outputs, mask, hidden = model.encode(_padded(src, device), lengths)
            target_ids = _padded(tgt, device)
            log_probs = model.decode_teacher_forced(target_ids, hidden, outputs, mask)
            picked = log_probs.gather(2, target_ids.unsqueeze(2)).squeeze(2)   # (T, B)
            picked = picked.masked_fill(target_ids == PAD, 0.0)
            out.extend(picked.double().sum(dim=0).tolist())
    return out


def with_eos(tokens: list[int]) -> list[int]:
    """A reply cut at the length limit has no EOS; the backward encoder always saw one."""
    return tokens if tokens and tokens[-1] == EOS else tokens + [EOS]


def words_in(tokens: list[int]) -> int:
    return len(tokens) - (1 if tokens and tokens[-1] == EOS else 0)


def pool(*sources: list[list[Hypothesis]], min_length: int = 0) -> list[list[Hypothesis]]:
    """Merge per-input candidate lists, dropping repeats and empty replies (and replies shorter
    than `min_length` words, unless that would leave an input with no candidate)."""
    merged: list[list[Hypothesis]] = []
    for per_input in zip(*sources, strict=True):
        seen: dict[tuple[int, ...], Hypothesis] = {}
        for hypotheses in per_input:
            for tokens, score in hypotheses:
                seen.setdefault(tuple(tokens), (tokens, score))
        found = list(seen.values())
        kept = [h for h in found if words_in(h[0]) >= max(min_length, 1)]
        merged.append(kept or [h for h in found if words_in(h[0]) > 0] or found)
    return merged


def mmi_rerank(backward: Seq2Seq, queries: list[list[int]], candidates: list[list[Hypothesis]],
               mmi_weight: float, length_bonus: float) -> list[list[Hypothesis]]:
    """Each input's candidates, best first by the MMI score (module docstring); the scores
    returned stay log p(r | q), so they compare with every other decoder's."""
    flat = [(row, h) for row, hyps in enumerate(candidates) for h in hyps]
    relevance = [0.0] * len(flat)
    if mmi_weight != 0.0 and flat:
        relevance = sequence_log_probs(backward, [with_eos(h[0]) for _, h in flat],
                                       [queries[row] for row, _ in flat])
    ranked: list[list[tuple[float, Hypothesis]]] = [[] for _ in candidates]
    for (row, (tokens, score)), backward_score in zip(flat, relevance, strict=True):
        combined = score + mmi_weight * backward_score + length_bonus * words_in(tokens)
        ranked[row].append((combined, (tokens, score)))
    return [[h for _, h in sorted(row, key=lambda item: item[0], reverse=True)]
            for row in ranked]
