"""The G samples of a prompt share its forward pass: in generation (one prefill per prompt, a preallocated KV cache)
and in scoring (``sequence_forward(share_prompts=True)``). Both must give what the plain computation gives."""

from __future__ import annotations

import pytest
import torch

from calgrpo_lib.policy import load_policy
from calgrpo_lib.rewards import build_prompt
from calgrpo_lib.rollout import sequence_forward
from calgrpo_lib.sampling import generate, prefill_shared, prompt_groups
from calgrpo_lib.tasks import generate_problems


@pytest.fixture(scope="module")
def tiny():
    return load_policy("tiny", device="cpu")


@pytest.fixture(scope="module")
def batch(tiny):
    """3 prompts of different lengths (so the prompts are left-padded) x 4 samples each."""
    model, tok = tiny
    prompts = [build_prompt(p.question) for p in generate_problems(3, seed=4, split="test")] + ["Question: 12 + 5"]
    g = generate(model, tok, prompts, max_new_tokens=24, temperature=1.0, num_return_sequences=4, seed=2)
    assert len(set(g.prompt_mask.sum(1).tolist())) > 1  # the batch really has left padding
    ids = torch.cat([g.prompt_ids, g.completion_ids], 1)
    mask = torch.cat([g.prompt_mask, g.completion_mask], 1)
    return ids, mask, g.prompt_ids.shape[1]


def test_prompt_groups_finds_runs_of_identical_rows():
    ids = torch.tensor([[1, 2], [1, 2], [3, 4], [3, 4], [3, 4], [1, 2]])
    mask = torch.ones_like(ids)
    first, inverse = prompt_groups(ids, mask)
    assert first.tolist() == [0, 2, 5]  # a prompt that comes back later starts a new run
    assert inverse.tolist() == [0, 0, 1, 1, 1, 2]
    assert torch.equal(ids[first][inverse], ids)
    mask[1, 0] = 0  # same ids, different padding: not the same prompt
    assert prompt_groups(ids, mask)[0].tolist() == [0, 1, 2, 5]


@pytest.mark.parametrize("shuffle", [False, True], ids=["grouped", "no-prompt-repeats"])
def test_shared_prompt_scoring_gives_the_plain_logits_and_gradients(tiny, batch, shuffle):
    model, _ = tiny
    ids, mask, start = batch
    if shuffle:  # rows reordered so that no two neighbours share a prompt: nothing to share, same answer
        order = torch.arange(ids.shape[0]).view(-1, 4).t().reshape(-1)
        ids, mask = ids[order], mask[order]
    results = []
    for share in (False, True):
        model.zero_grad()
        logits = sequence_forward(model, ids, mask, start, share_prompts=share)  # (n, T + 1, V)
        (logits.log_softmax(-1)[..., :7].sum()).backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    model.zero_grad()
    (plain, plain_grads), (shared, shared_grads) = results
    assert shared.shape == plain.shape == (ids.shape[0], ids.shape[1] - start + 1, plain.shape[-1])
    torch.testing.assert_close(shared, plain, atol=1e-4, rtol=1e-4)
    for a, b in zip(shared_grads, plain_grads):  # equal up to float32 summation order
        assert (a - b).norm() <= 1e-4 * b.norm()


def test_prefill_shared_runs_each_distinct_prompt_once(tiny, batch):
    model, _ = tiny
    ids, mask, start = batch
    seen = []
    hook = model.model.embed_tokens.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    try:
        pos = (mask[:, :start].cumsum(-1) - 1).clamp(min=0)
        out = prefill_shared(model, ids[:, :start], mask[:, :start], pos)
    finally:
        hook.remove()
    assert seen == [4]  # 4 distinct prompts, not 16 rows
    assert out.logits.shape[0] == ids.shape[0] and out.cache.get_seq_length() == start


def test_sampled_greedy_equals_a_cacheless_argmax_loop(tiny):
    """Generation (shared prefill, preallocated cache) against the simplest possible decoder: run the whole sequence
    through the model at every step, with no cache, and take the argmax."""
    model, tok = tiny
    prompts = [build_prompt(p.question) for p in generate_problems(2, seed=9, split="test")]
    g = generate(model, tok, prompts, max_new_tokens=20, num_return_sequences=2)
    for i, prompt in enumerate(prompts):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            for _ in range(20):
                nxt = model(input_ids=ids).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], 1)
                if nxt.item() == tok.eos_token_id:
                    break
        expected = tok.decode(ids[0, -(ids.shape[1] - len(tok(prompt)["input_ids"])):].tolist(),
                              skip_special_tokens=True)
        assert g.texts[2 * i] == g.texts[2 * i + 1] == expected
