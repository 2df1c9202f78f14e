"""Comparing the codes of two runs so that a GPU's kernel numerics pass and a real defect fails, as vLLM compares
models (tests/models/utils.py, check_logprobs_close): the two runs are equal up to the first decode step where
their choices differ, and there each side's choice is explained by numerics under a reference's scores: within a
tolerance of the best code, or beaten only by codes at the edge of top-k / top-p (which the other side's rounding
may have dropped). After that step the runs feed the model different codes, so nothing later is compared.

The reference's scores at that step come from the eager transformers model teacher-forced on the common prefix
(the prompt, then the codes both runs chose before it), never from an engine's internals, turned into the request's
selection keys: the logits for a greedy row; for a sampling row the tempered logits minus the log of the step's
exponential noise, which is the seed's own stream as Boson's code draws it (torch.multinomial is argmax(p / q), q
one [codebooks, vocab] draw per step from step 1, from a generator on the logits' device seeded with the seed).
A RAS redraw at that step (its noise is the server's own) cannot be judged: such a codebook is reported, not failed.

On the CPU in float32 the engines give the same codes bit for bit (eager, compiled, alone, batched, the reference):
there `exact_numerics` is true and the comparison is plain equality.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from model_pool.defaults import MIN_TEMPERATURE

BOS, EOS = 1024, 1025
TOP = 5  # the reference's best codes a failure names
# A divergent choice must be within TOLERANCE of the best (logit units, before the temperature): on a GPU, bf16
# kernels that differ in shape or fusion move the tiny model's logits (|x| < 1) by a few bf16 steps (2^-8 at 0.5);
# the full model's are larger, so its probe reports gaps rather than judging them.
TOLERANCE = 0.03


def exact_numerics(model) -> bool:
    """float32 on the CPU, where every comparison of codes must hold exactly."""
    weight = next(model.parameters())
    return weight.device.type == "cpu" and weight.dtype == torch.float32


@dataclass
class Divergence:
    step: int  # the first decode step at which the runs' codes differ
    codebooks: list[int]  # the codebooks that differ there
    ours: list[int]
    theirs: list[int]
    gaps: list[float | None]  # per codebook: the larger of the two choices' distance below the best key (None: RAS)

    def __str__(self) -> str:
        return f"step {self.step}: codebooks {self.codebooks}, {self.ours} vs {self.theirs}, gaps {self.gaps}"


def first_divergence(ours: torch.Tensor, theirs: torch.Tensor) -> Divergence | None:
    """Frames [frames, codebooks] (delay reverted): frame j takes codebook k at decode step j + 1 + k."""
    n = min(ours.shape[0], theirs.shape[0])
    differ = (ours[:n] != theirs[:n]).nonzero().tolist()
    if not differ:
        return None
    step = min(j + 1 + k for j, k in differ)
    at = sorted((k, j) for j, k in differ if j + 1 + k == step)
    return Divergence(step, [k for k, _ in at], [int(ours[j, k]) for k, j in at], [int(theirs[j, k]) for k, j in at],
                      [])


def columns(frames: torch.Tensor, steps: int) -> torch.Tensor:
    """The audio columns a run fed the model at decode steps 0 .. steps-1 (the delay pattern: codebook k starts k
    steps late, after the stream-begin code), rebuilt from its frames: [steps, codebooks]."""
    K = frames.shape[1]
    out = torch.full((steps, K), BOS, dtype=torch.long)
    for t in range(1, steps):
        for k in range(min(t, K)):
            out[t, k] = frames[t - 1 - k, k]
    return out


def teacher_forced_logits(model, prompt, fed: torch.Tensor) -> torch.Tensor:
    """The eager transformers model's logits for decode steps 0 .. len(fed), the prompt followed by the columns
    `fed` in one forward: [len(fed) + 1, codebooks, vocab], float32 on the CPU. Step 0's logits follow the prompt;
    step t's follow column t - 1."""
    device, config = next(model.parameters()).device, model.config
    steps = fed.shape[0]
    ids = torch.cat([prompt.input_ids, torch.full((steps,), config.audio_token_id, dtype=torch.long)])
    audio = fed if prompt.audio_ids is None else torch.cat([prompt.audio_ids, fed])
    with torch.inference_mode():
        out = model(input_ids=ids.to(device).unsqueeze(0),
                    audio_input_ids=audio.to(device).unsqueeze(0) if audio.shape[0] else None,
                    logits_to_keep=steps + 1)
    return out.logits[0].float().view(steps + 1, config.num_codebooks, config.codebook_size).cpu()


def noise(seed: int, step: int, shape: tuple[int, int], device) -> torch.Tensor:
    """The seed's exponential noise at decode step `step` (>= 1), as Boson's torch.multinomial draws it."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    q = torch.empty(shape, device=device)
    for _ in range(step):
        q.exponential_(1.0, generator=generator)
    return q.cpu()


OUT, MARGINAL, IN = 0, 1, 2  # a code's place in a sampling row's top-k / top-p set, numerics allowed for


@dataclass
class Keys:
    """What one step's choices are judged against, [codebooks, vocab]: each code's selection key (its argmax among
    the codes the row keeps is the code), whether the row keeps it (IN), surely not (OUT), or either way within the
    tolerance (MARGINAL: near top-k's or top-p's boundary, or tied there), the codebooks where a RAS redraw may have
    decided the step, and the tolerance in the keys' units."""

    key: torch.Tensor
    kept: torch.Tensor
    redraw: torch.Tensor
    tolerance: float = TOLERANCE


def keys(logits: torch.Tensor, params, step: int, q: torch.Tensor | None = None,
         tolerance: float = TOLERANCE) -> Keys:
    """The keys at `step`: the logits (greedy), or the tempered logits minus log q (sampling: torch.multinomial's
    argmax(p / q) in log space). Membership follows the server's selection (top-k, then top-p over what it left)
    on these logits, with every code whose membership a change of `tolerance` in the logits could flip marked
    MARGINAL: on the other side it may have been kept or dropped."""
    x = logits.float().clone()
    if step < params.min_new_tokens:
        x[:, EOS] = float("-inf")
    kept = torch.where(torch.isfinite(x), IN, OUT).to(torch.int8)
    if params.temperature < MIN_TEMPERATURE:
        return Keys(x, kept, torch.zeros(x.shape[0], dtype=torch.bool), tolerance)
    scaled, margin = x / params.temperature, 2 * tolerance / params.temperature  # both sides may be off
    if params.top_k and params.top_k < x.shape[-1]:
        kth = scaled.topk(params.top_k, dim=-1).values[:, -1:]
        kept[scaled < kth - margin] = OUT
        kept[(kept == IN) & (scaled <= kth + margin)] = MARGINAL
    if params.top_p is not None and params.top_p < 1.0:
        p = scaled.masked_fill(kept == OUT, float("-inf")).softmax(dim=-1)
        ordered, order = p.sort(dim=-1, descending=True)
        above = torch.empty_like(p).scatter_(-1, order, ordered.cumsum(dim=-1) - ordered)  # mass of likelier codes
        # the server keeps a code while the mass above it is below top_p; numerics move that mass by ~margin
        kept[(above > params.top_p + margin) & (kept != OUT)] = OUT
        kept[((above - params.top_p).abs() <= margin) & (kept == IN)] = MARGINAL
    return Keys(scaled - q.log(), kept, torch.zeros(x.shape[0], dtype=torch.bool), tolerance / params.temperature)


def ras_may_redraw(key: Keys, params, history: list[torch.Tensor]) -> torch.Tensor:
    """[codebooks] bool: where a code the row may choose (kept, within the tolerance of the best) already fills its
    RAS quota in the window (the last ras_win_len columns of `history`: the prompt's assistant audio, then the
    generated columns), so a redraw may have decided the step."""
    K, V = key.key.shape
    if not params.ras_win_len or not history:
        return torch.zeros(K, dtype=torch.bool)
    window = torch.stack(history[-params.ras_win_len:], dim=1)  # [K, columns]
    row = key.key.masked_fill(key.kept == OUT, float("-inf"))
    near = row >= row.max(dim=-1, keepdim=True).values - key.tolerance
    counts = torch.stack([torch.bincount(window[k], minlength=V)[:V] for k in range(K)])
    return (near & (counts >= params.ras_win_max_num_repeat)).any(dim=-1)


def explained(key: Keys, k: int, code: int) -> tuple[bool, float]:
    """Whether choosing `code` in codebook k is numerics: the row may keep it, and every code whose key beats it by
    more than the tolerance may have been dropped on that side (a marginal code). Also its gap below the best code
    the row surely keeps."""
    row, kept = key.key[k], key.kept[k]
    surely = row.masked_fill(kept != IN, float("-inf"))
    gap = float(surely.max() - row[code]) if bool((kept == IN).any()) else 0.0
    if kept[code] == OUT:
        return False, gap
    return not bool(((row > row[code] + key.tolerance) & (kept == IN)).any()), gap


def judge(ours: torch.Tensor, theirs: torch.Tensor, keys_at: Callable[[int], Keys], what: str = "") -> Divergence | None:
    """Fail unless the runs agree up to their first divergence and each choice there is explained by numerics under
    the reference's keys_at(step): a near-tie of keys, or a code at the edge of top-k / top-p. Returns the
    divergence (None: the runs are equal)."""
    assert ours.shape == theirs.shape, f"{what}: {tuple(ours.shape)} frames vs {tuple(theirs.shape)}"
    found = first_divergence(ours, theirs)
    if found is None:
        return None
    key = keys_at(found.step)
    for k, a, b in zip(found.codebooks, found.ours, found.theirs):
        if key.redraw[k]:
            found.gaps.append(None)
            continue
        (ok_a, gap_a), (ok_b, gap_b) = explained(key, k, a), explained(key, k, b)
        found.gaps.append(round(max(gap_a, gap_b), 5))
        best = key.key[k].masked_fill(key.kept[k] == OUT, float("-inf")).topk(TOP).indices.tolist()
        assert ok_a and ok_b, (
            f"{what}: the runs part at {found}: {a} is {gap_a:.4f} and {b} is {gap_b:.4f} below the best code the "
            f"reference surely keeps (tolerance {key.tolerance:.4f}; kept: {int(key.kept[k, a])}, "
            f"{int(key.kept[k, b])}); its best codes: {best} (a defect, not a near-tie)")
    return found


def assert_codes_agree(ours: torch.Tensor, theirs: torch.Tensor, model, prompt, params,
                       tolerance: float = TOLERANCE, what: str = "") -> Divergence | None:
    """Two runs of one request (`prompt`, `params`): equal on the CPU in float32; elsewhere judged at their first
    divergence against the eager transformers model teacher-forced on the prefix they share."""
    if exact_numerics(model):
        assert torch.equal(ours, theirs), f"{what}: the runs part at {first_divergence(ours, theirs)}"
        return None
    device = next(model.parameters()).device
    sampled = params.temperature >= MIN_TEMPERATURE

    def keys_at(step: int) -> Keys:
        fed = columns(ours, step)
        logits = teacher_forced_logits(model, prompt, fed)[step]
        q = noise(params.seed, step, tuple(logits.shape), device) if sampled else None
        key = keys(logits, params, step, q, tolerance)
        tail = [] if prompt.audio_out_tail is None else list(prompt.audio_out_tail)
        key.redraw = ras_may_redraw(key, params, tail + list(fed))
        return key

    return judge(ours, theirs, keys_at, what)
