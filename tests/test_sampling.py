"""The sampler against its reference distribution, and SamplingParams' ranges.

Distribution tests: N seeded draws from fixed logits; the empirical frequencies p̂ must match the reference p
(softmax(logits / T), then top-k renormalised, then the nucleus of that, renormalised) in total variation. The bound is the
Bretagnolle–Huber–Carol inequality for a multinomial over k outcomes: P(‖p̂ − p‖₁ ≥ λ) ≤ 2^k · exp(−N λ² / 2).
With k = 8 outcomes, N = 6000 draws and a false-failure rate δ = 1e-6 per check, λ = sqrt(2 (k ln 2 + ln 1/δ) / N)
≈ 0.080, i.e. TV ≤ 0.040; ignoring the temperature or top_p moves TV by > 0.15 on these logits.
Property-based cases (hypothesis): any valid params on any usable row give an allowed token; unusable rows fail alone.
"""
import math

import pytest
import torch
from hypothesis import example, given, settings, strategies as st

from engine.serving.sampling import GREEDY_BELOW, SamplingParams, make_generator, sample

LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0])
N = 6000
DELTA = 1e-6
LAMBDA_L1 = math.sqrt(2 * (len(LOGITS) * math.log(2) + math.log(1 / DELTA)) / N)


def reference(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The distribution the sampler must follow, written plainly (float64, one token at a time)."""
    p = torch.softmax(logits.double() / temperature, -1)
    order = sorted(range(len(p)), key=lambda i: -p[i].item())
    kth = p[order[min(top_k, len(p)) - 1]].item() if top_k else 0.0
    keep = [i for i in order if p[i].item() >= kth * (1 - 1e-6)]  # ties with the k-th stay (vLLM, HF), fp32-near too
    total = sum(p[i].item() for i in keep)  # top-p applies to the top-k distribution renormalised (vLLM, HF)
    mass, nucleus = 0.0, set()
    for i in keep:  # the smallest top set whose mass reaches top_p
        if mass < top_p:
            nucleus.add(i)
            mass += p[i].item() / total
    q = torch.tensor([p[i].item() if i in nucleus else 0.0 for i in range(len(p))], dtype=torch.float64)
    return q / q.sum()


def empirical(params: SamplingParams, logits=LOGITS, n=N) -> torch.Tensor:
    g = make_generator(params, "cpu")
    rows = logits.expand(n, -1)
    counts = torch.bincount(torch.tensor(sample(rows, [params] * n, [g] * n)), minlength=len(logits))
    return counts.double() / n


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, 0, 1.0), (0.5, 0, 1.0), (2.0, 0, 1.0),     # tempered
    (1.0, 3, 1.0), (0.7, 5, 1.0), (1.0, 100, 1.0),   # top-k (100 > vocabulary: no filter)
    (1.0, 0, 0.6), (1.3, 0, 0.9), (1.0, 4, 0.5),     # nucleus, and both
    (1.0, 3, 0.7),  # the nucleus of the renormalised top 3 is 2 tokens (of the raw top 3 it would be all 3)
])
def test_draws_follow_the_reference_distribution(temperature, top_k, top_p):
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=1234)
    tv = 0.5 * (empirical(params) - reference(LOGITS, temperature, top_k, top_p)).abs().sum().item()
    assert tv <= LAMBDA_L1 / 2, f"TV {tv:.4f} > {LAMBDA_L1 / 2:.4f} (false-failure rate {DELTA})"


def test_the_bound_separates_the_settings_it_must_tell_apart():
    """The check has power: the reference distributions a sampler ignoring T or top_p would follow are far."""
    far = lambda a, b: 0.5 * (a - b).abs().sum().item() > 2 * LAMBDA_L1
    assert far(reference(LOGITS, 0.5), reference(LOGITS, 1.0))
    assert far(reference(LOGITS, 1.0, top_p=0.6), reference(LOGITS, 1.0))
    assert far(reference(LOGITS, 1.0, top_k=3), reference(LOGITS, 1.0))


@pytest.mark.parametrize("temperature", [0.0, 1e-6, GREEDY_BELOW / 2, 1e-300, 5e-324])
def test_vanishing_temperatures_are_greedy(temperature):
    params = SamplingParams(temperature=temperature, seed=0)
    assert params.temperature == 0.0 and params.greedy
    assert set(sample(LOGITS.expand(50, -1), [params] * 50, [None] * 50)) == {0}


def test_edge_values_near_the_limits():
    near_zero_t = SamplingParams(temperature=2 * GREEDY_BELOW, seed=3)  # sampled, not greedy, but no overflow
    assert not near_zero_t.greedy and set(sample(LOGITS.expand(200, -1), [near_zero_t] * 200, [None] * 200)) == {0}
    tiny_p = SamplingParams(temperature=1.0, top_p=1e-300, seed=3)  # the top token alone is the nucleus
    assert set(sample(LOGITS.expand(200, -1), [tiny_p] * 200, [None] * 200)) == {0}
    assert empirical(SamplingParams(top_p=1.0, seed=5), n=2000)[-1] > 0  # top_p = 1 keeps the tail
    tail = reference(LOGITS, 1.0, top_p=1 - 1e-12)
    assert tail[-1] > 0  # just under 1 keeps the tail too


@pytest.mark.parametrize("field, value", [
    ("temperature", -0.1), ("temperature", math.inf), ("temperature", math.nan), ("temperature", True),
    ("top_p", 0.0), ("top_p", -1e-300), ("top_p", 1.0000001), ("top_p", math.nan), ("top_p", "0.5"),
    ("top_k", -1), ("top_k", 2.5), ("max_tokens", 0), ("seed", 2 ** 64), ("seed", 2 ** 70), ("seed", -(2 ** 63) - 1),
    ("seed", 1.5), ("stop_token_ids", [-1]), ("stop_token_ids", ["a"]),
])
def test_out_of_range_params_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_a_seed_makes_draws_reproducible_and_other_seeds_differ():
    draws = lambda seed: sample(LOGITS.expand(64, -1), [SamplingParams(seed=seed)] * 64,
                                [make_generator(SamplingParams(seed=seed), "cpu")] * 64)
    torch.manual_seed(1)  # the global generator, moved between the runs, must not matter
    first = draws(7)
    torch.manual_seed(2)
    assert draws(7) == first and draws(8) != first  # 64 draws over 8 tokens: equal by chance ~never


def test_edges_of_the_valid_ranges_are_accepted():
    assert not SamplingParams(temperature=GREEDY_BELOW).greedy and SamplingParams(temperature=GREEDY_BELOW).temperature
    assert SamplingParams(max_tokens=1, top_k=0, top_p=1.0).max_tokens == 1
    assert SamplingParams(stop_token_ids=(0, 5)).stop_token_ids == (0, 5)
    for bad in ([3, -1], (-1,), "7", [True]):
        with pytest.raises(ValueError, match="stop_token_ids"):
            SamplingParams(stop_token_ids=bad)
    assert SamplingParams(stop="</s>").stop == ["</s>"] and SamplingParams(stop=["", "a"]).stop == ["a"]
    assert SamplingParams(stop=None).stop == [] and SamplingParams(stop="").stop == []


def test_each_row_is_greedy_over_its_own_logits_below_the_vocab_limit():
    rows = torch.tensor([[0.0, 1.0, 5.0, 9.0], [3.0, 0.0, 1.0, 0.0], [0.0, 2.0, 1.0, 0.0]])
    greedy = [SamplingParams(temperature=0)] * 3
    assert sample(rows, greedy, [None] * 3) == [3, 0, 1]
    assert sample(rows, greedy, [None] * 3, vocab_limit=3) == [2, 0, 1]  # the padding column never comes out
    assert sample(rows, greedy, [None] * 3, vocab_limit=4) == [3, 0, 1]
    hot = SamplingParams(temperature=5.0, seed=0)
    assert set(sample(rows[:1].expand(200, -1), [hot] * 200, [make_generator(hot, "cpu")] * 200, vocab_limit=2)) \
        == {0, 1}


def test_seeds_over_the_whole_range_work():
    for seed in (0, 2 ** 64 - 1, -(2 ** 63)):
        make_generator(SamplingParams(seed=seed), "cpu")


def test_an_unusable_row_fails_alone():
    rows = LOGITS.expand(5, -1).clone()
    rows[1, 3] = math.nan
    rows[2, 0] = math.inf
    rows[3] = -math.inf
    params = [SamplingParams(temperature=0), SamplingParams(), SamplingParams(temperature=0), SamplingParams(),
              SamplingParams(seed=1)]
    out = sample(rows, params, [None] * 5)
    assert out[1] is None and out[2] is None and out[3] is None and out[0] == 0 and out[4] in range(8)


finite = st.floats(-50, 50, allow_nan=False, width=32)
rows = st.lists(st.one_of(finite, st.just(-math.inf)), min_size=1, max_size=40).filter(
    lambda r: any(math.isfinite(x) for x in r))
valid = st.builds(SamplingParams, temperature=st.one_of(st.just(0.0), st.floats(1e-7, 10)),
                  top_p=st.floats(1e-300, 1.0, exclude_min=False), top_k=st.integers(0, 50),
                  seed=st.integers(-(2 ** 63), 2 ** 64 - 1))


@settings(max_examples=150, deadline=None)
@given(row=rows, params=valid)
@example(row=[0.0, -math.inf, 0.0, 0.0, 0.0], params=SamplingParams(temperature=1.0, top_p=0.25, seed=0))  # ties
@example(row=[0.5, 0.0, 0.0], params=SamplingParams(temperature=1.0, top_p=0.5, top_k=2, seed=0))  # a tie at the
# k-th: both stay, so token 0 holds 0.45 of the top-k mass (not 0.62) and the nucleus of 0.5 takes a second token
def test_any_valid_params_on_any_usable_row_give_an_allowed_token(row, params):
    logits = torch.tensor(row, dtype=torch.float32)
    token = sample(logits[None], [params], [make_generator(params, "cpu")])[0]
    assert token is not None and math.isfinite(row[token])
    if params.greedy:
        assert row[token] == max(row)
        return
    allowed = reference(logits, params.temperature, params.top_k, params.top_p)
    # ties: among equal probabilities at the edge of the top-k or nucleus set any may be the one kept, so a token
    # is allowed when it is at least as likely as the least likely token of the reference set
    p = torch.softmax(logits.double() / params.temperature, -1)
    edge = p[allowed > 0].min()
    assert p[token] >= edge * (1 - 1e-6) or _within_rounding(logits, params, token), (token, allowed)


def _within_rounding(logits, params, token) -> bool:
    """fp32 vs float64 cumulative mass: a token at the nucleus edge may be in or out by rounding."""
    p = torch.softmax(logits.double() / params.temperature, -1)
    before = p[p > p[token]].sum().item()
    return abs(before - params.top_p) < 1e-5


@settings(max_examples=200, deadline=None)
@given(temperature=st.floats(allow_nan=True, allow_infinity=True), top_p=st.floats(allow_nan=True),
       seed=st.one_of(st.none(), st.integers()))
def test_params_are_valid_and_finite_or_refused(temperature, top_p, seed):
    try:
        p = SamplingParams(temperature=temperature, top_p=top_p, seed=seed)
    except ValueError:
        return
    assert math.isfinite(p.temperature) and (p.temperature == 0 or p.temperature >= GREEDY_BELOW)
    assert 0 < p.top_p <= 1 and (p.seed is None or -(2 ** 63) <= p.seed < 2 ** 64)
    make_generator(p, "cpu")


def weights_drawn_from(monkeypatch, row: list[float], params: SamplingParams) -> torch.Tensor:
    """The weights the sampler hands to torch.multinomial (the real one still draws), normalised."""
    seen, draw = [], torch.multinomial
    monkeypatch.setattr(torch, "multinomial", lambda probs, *a, **kw: seen.append(probs) or draw(probs, *a, **kw))
    sample(torch.tensor([row]), [params], [make_generator(params, "cpu")])
    return seen[0].double() / seen[0].double().sum()


@pytest.mark.parametrize("row, temperature, top_k, top_p", [
    (LOGITS.tolist(), 0.7, 5, 0.8), (LOGITS.tolist(), 1.0, 3, 0.7), (LOGITS.tolist(), 1.5, 0, 1.0),
    ([0.0, -20.0], 1.0, 0, 1.0),  # top_p 1 keeps a token of probability 2e-9 (no nucleus at all)
    ([0.0, -20.0, -3.0], 1.0, 50, 1.0),  # and so does a top_k above the vocabulary
    ([0.0, 0.0, 0.0, 0.0], 1.0, 0, 0.5),  # masses 0.25 exactly: 2 tokens reach 0.5, a third is not added
])
def test_the_weights_drawn_from_are_the_reference_distribution(monkeypatch, row, temperature, top_k, top_p):
    """Exact (deterministic) where the draws above are statistical: same support, weights to fp32 rounding."""
    got = weights_drawn_from(monkeypatch, row, SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p))
    want = reference(torch.tensor(row), temperature, top_k, top_p)
    if len(set(row)) < len(row):  # ties: which tokens are kept is free, how many and their weights are not
        got, want = got.sort().values, want.sort().values
    assert torch.equal(got > 0, want > 0) and torch.allclose(got, want, atol=1e-6, rtol=1e-5), (got, want)


def test_huge_finite_logits_are_usable():
    """Scaled from the row's maximum, logits near the fp32 limit neither overflow nor give NaN weights."""
    row = torch.tensor([[3.0e38, 2.0e38, -3.0e38, 3.0e38 - 2.0e31]])
    for params in (SamplingParams(temperature=1.0, seed=1), SamplingParams(temperature=0.5, top_k=2, seed=1)):
        draws = {sample(row, [params], [make_generator(params, "cpu")])[0] for _ in range(20)}
        assert draws == {0}


def test_studio_settings_use_the_same_ranges():
    from studio.chat_settings import ChatSettings
    for field, value in [("temperature", math.nan), ("top_p", math.inf), ("seed", 2 ** 70), ("seed", "7")]:
        with pytest.raises(ValueError, match=field):
            ChatSettings(**{field: value}).check()
    assert ChatSettings(temperature=1e-45, top_p=1e-300).check().sampling_params().greedy
