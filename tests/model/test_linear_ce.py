"""model.cross_entropy=chunked (octomega.model.linear_ce): the same loss and gradients as the full-logits cross
entropy, for any chunking, with vocabulary padding, masked tokens, bf16 and vocabulary-parallel TP=2; nothing of
size tokens x vocab kept for the backward; and the refusals of the other cross-entropy choices where they
cannot run."""

import pytest
import torch
import torch.nn.functional as F

from octomega.config import ConfigError, ModelConfig, ParallelConfig
from octomega.model import llama
from octomega.model.linear_ce import PAD_LOGIT, linear_cross_entropy
from octomega.testing import run_distributed


def _inputs(tokens=23, hidden=16, vocab=50, padded=64, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(padded, hidden, generator=g) * 0.5).to(dtype).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    mask = (torch.rand(tokens, generator=g) > 0.3).float()
    return h, w, labels, mask


def _reference(h, w, labels, mask, vocab):
    """Full logits in fp32, padding rows at PAD_LOGIT (as llama.py's output-layer hook), F.cross_entropy."""
    logits = (h.float() @ w.float().t())
    logits = torch.cat([logits[:, :vocab], torch.full_like(logits[:, vocab:], PAD_LOGIT)], dim=1)
    losses = F.cross_entropy(logits, labels, reduction="none")
    return (losses * mask).sum(), losses


@pytest.mark.parametrize("chunk", [1, 5, 23, 100])
def test_loss_and_gradients_equal_full_logits(chunk):
    h, w, labels, mask = _inputs()
    total, losses = linear_cross_entropy(h, w, labels, mask, vocab_size=50, chunk_tokens=chunk)
    (2.5 * total).backward()  # a non-unit upstream gradient must scale both gradients
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref_total, ref_losses = _reference(h, w, labels, mask, 50)
    (2.5 * ref_total).backward()
    torch.testing.assert_close(losses, ref_losses.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(total, ref_total.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gh, h.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, w.grad, rtol=1e-5, atol=1e-6)
    assert gw[50:].abs().max() == 0  # padding rows take no gradient
    assert gh[mask == 0].abs().max() == 0  # masked tokens give no gradient


def test_bf16_close_to_fp32_reference():
    h, w, labels, mask = _inputs(tokens=64, hidden=32, vocab=200, padded=256, dtype=torch.bfloat16, seed=1)
    total, losses = linear_cross_entropy(h, w, labels, mask, vocab_size=200, chunk_tokens=16)
    total.backward()
    assert losses.dtype == torch.float32 and h.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.bfloat16
    gh, gw = h.grad.float(), w.grad.float()
    h.grad = w.grad = None
    ref_total, ref_losses = _reference(h, w, labels, mask, 200)
    ref_total.backward()
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    assert rel(losses, ref_losses.detach()) < 1e-3
    assert rel(gh, h.grad.float()) < 1e-2 and rel(gw, w.grad.float()) < 1e-2


def test_no_grad_computes_losses_only():
    h, w, labels, mask = _inputs()
    with torch.no_grad():
        total, losses = linear_cross_entropy(h, w, labels, mask, vocab_size=50, chunk_tokens=4)
    assert not total.requires_grad
    torch.testing.assert_close(losses, _reference(h, w, labels, mask, 50)[1].detach(), rtol=1e-5, atol=1e-5)


def test_nothing_of_tokens_by_vocab_is_kept_for_backward():
    """The point of the chunked loss: the unfused loss keeps tensors of tokens x vocab for its backward (the
    logits, the fp32 softmax); the chunked one keeps only hidden-sized and weight-sized gradients."""
    tokens, hidden, padded = 40, 8, 64  # tokens x padded differs from every other shape involved
    h, w, labels, mask = _inputs(tokens=tokens, hidden=hidden, vocab=60, padded=padded)
    kept = []

    def pack(t):
        kept.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _reference(h, w, labels, mask, 60)[0]
    assert tokens * padded in kept  # the check can fail: the full-logits path does keep them
    kept.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        total, _ = linear_cross_entropy(h, w, labels, mask, vocab_size=60, chunk_tokens=8)
    assert kept and max(kept) <= max(tokens * hidden, padded * hidden)
    total.backward()
    assert h.grad is not None and w.grad is not None


def _tp2_worker(rank, chunk):
    """Each rank holds half of the (padded) vocabulary rows; same loss everywhere, gradients summed over ranks
    equal the TP=1 ones (hidden) or are this rank's rows of them (weight)."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    from octomega.runtime import init_distributed

    init_distributed(tp=2)
    group = parallel_state.get_tensor_model_parallel_group()
    h, w, labels, mask = _inputs(tokens=30, hidden=12, vocab=101, padded=128, seed=3)
    half = w.shape[0] // 2
    w_local = w.detach()[rank * half:(rank + 1) * half].clone().requires_grad_()
    total, losses = linear_cross_entropy(h, w_local, labels, mask, vocab_size=101, vocab_start=rank * half,
                                         chunk_tokens=chunk, group=group)
    total.backward()
    gh = h.grad.clone()
    dist.all_reduce(gh, group=group)  # what copy_to_tensor_model_parallel_region's backward does
    return total.item(), losses.numpy(), gh.numpy(), w_local.grad.numpy()


@pytest.mark.dist
def test_vocab_parallel_tp2_equals_tp1():
    h, w, labels, mask = _inputs(tokens=30, hidden=12, vocab=101, padded=128, seed=3)
    ref_total, ref_losses = _reference(h, w, labels, mask, 101)
    ref_total.backward()
    out = run_distributed(_tp2_worker, world_size=2, args=(7,), timeout=120)
    for rank, (total, losses, gh, gw_local) in enumerate(out):
        losses, gh, gw_local = map(torch.from_numpy, (losses, gh, gw_local))
        assert total == pytest.approx(ref_total.item(), rel=1e-5)
        torch.testing.assert_close(losses, ref_losses.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gh, h.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gw_local, w.grad[rank * 64:(rank + 1) * 64], rtol=1e-5, atol=1e-6)


def test_gpt_model_loss_and_grads_match_megatron_loss(world1):
    """The whole GPTModel (tied embeddings, padded vocabulary): the chunked output processor gives Megatron's
    per-token losses and the same gradient in every parameter."""
    from octomega.model import build_model
    from octomega.model.llama import loss_processor

    cfg = ModelConfig(num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4, num_query_groups=2,
                      vocab_size=200, make_vocab_size_divisible_by=128, max_position_embeddings=64,
                      cross_entropy="chunked", ce_chunk_tokens=7)
    torch.manual_seed(0)
    model = build_model(cfg, ParallelConfig(), dtype=torch.float32, on_gpu=False)
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 200, (3, 16), generator=g)
    labels = torch.randint(0, 200, (3, 16), generator=g)
    mask = (torch.rand(3, 16, generator=g) > 0.2).float()
    pos = torch.arange(16).expand_as(tokens)

    per_token = model(tokens, pos, None, labels=labels)  # Megatron's vocab_parallel_cross_entropy
    (per_token * mask).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    total, losses = model(tokens, pos, None, labels=labels, loss_mask=mask, output_processor=loss_processor(cfg))
    total.backward()
    torch.testing.assert_close(losses, per_token.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(total, (per_token * mask).sum().detach(), rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")


# ------------------------------------------------------------------------------------ refusals


def test_te_cross_entropy_without_te_spec_is_refused(monkeypatch):
    monkeypatch.setattr(llama, "te_available", lambda: False)
    with pytest.raises(ConfigError, match="cross_entropy=te needs Transformer Engine"):
        llama.resolve_layer_spec(ModelConfig(cross_entropy="te"), on_gpu=True)


def test_native_cross_entropy_refused_on_cpu_and_in_fp32():
    with pytest.raises(ConfigError, match="native is Megatron's GPU kernel path"):
        llama.resolve_layer_spec(ModelConfig(cross_entropy="native"), on_gpu=False)
    with pytest.raises(ConfigError, match="bf16 only"):
        llama.transformer_config(ModelConfig(cross_entropy="native"), ParallelConfig(), dtype=torch.float32,
                                 on_gpu=True)
    tc = llama.transformer_config(ModelConfig(cross_entropy="native"), ParallelConfig(), dtype=torch.bfloat16,
                                  on_gpu=True)
    assert tc.cross_entropy_loss_fusion and tc.cross_entropy_fusion_impl == "native"
    assert not llama.transformer_config(ModelConfig(), ParallelConfig(), dtype=torch.bfloat16,
                                        on_gpu=True).cross_entropy_loss_fusion


def test_chunk_size_validated():
    from octomega.config import RunConfig, validate

    cfg = RunConfig(name="t")
    cfg.model.ce_chunk_tokens = 0
    cfg.optim.lr = 1e-3
    with pytest.raises(ConfigError, match="ce_chunk_tokens=0"):
        validate(cfg, 1)

