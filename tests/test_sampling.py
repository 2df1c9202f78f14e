"""The delay pattern in RowSampler: stream-begin codes at the start, the stream-end cascade at the end."""

import torch

from model_pool.request import SamplingParams
from model_pool.sampling import RowSampler

BOS, EOS, CB, V = 1024, 1025, 8, 1026


def logits_preferring(code: int, codebooks=range(CB)) -> torch.Tensor:
    logits = torch.zeros(CB, V)
    logits[:, 7] = 1.0  # an ordinary code wins unless something else is preferred
    for k in codebooks:
        logits[k, code] = 5.0
    return logits


def test_begin_phase_and_end_cascade():
    sampler = RowSampler(SamplingParams(temperature=0, max_new_tokens=100), CB, BOS, EOS, "cpu")
    rows = [sampler.choose(logits_preferring(7)).tolist() for _ in range(CB + 2)]
    for t, row in enumerate(rows):
        assert row == [7] * min(t, CB) + [BOS] * (CB - min(t, CB))  # codebook k starts at step k
    # Codebook 3 asks for stream end at step 10: from then on codebooks 0, 1, ... are forced to end, one per step.
    row = sampler.choose(logits_preferring(EOS, [3])).tolist()
    assert row == [7, 7, 7, EOS, 7, 7, 7, 7] and sampler.eos_step == 10
    for j in range(1, CB + 1):
        row = sampler.choose(logits_preferring(7)).tolist()
        assert row[:j] == [EOS] * j and all(c == 7 for c in row[j:])
    assert sampler.finished and sampler.frame_ended(9) and not sampler.frame_ended(8)


def test_min_new_tokens_suppresses_stream_end():
    sampler = RowSampler(SamplingParams(temperature=0, max_new_tokens=100, min_new_tokens=20), CB, BOS, EOS, "cpu")
    for _ in range(20):  # steps 0..19
        assert EOS not in sampler.choose(logits_preferring(EOS)).tolist()
    assert EOS in sampler.choose(logits_preferring(EOS)).tolist()
