"""The CPU sizing of trl's fused LM head (workbench/train/cpu_lm_head.py) changes the speed,
not the numbers: the loss, the gradients and the metrics trl logs are those of trl's own
settings, on a model whose vocabulary and batch span several tiles."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture
def trl_sizes():
    from workbench.train.cpu_lm_head import restore_trl_sizes

    restore_trl_sizes()
    yield
    restore_trl_sizes()


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    # vocabulary 9,000 > 2 tiles of 4,096; 2 x 300 positions > 2 tiles of 256 tokens
    config = LlamaConfig(vocab_size=9000, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    return model


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 9000, (2, 300), generator=g)
    labels = ids.clone()
    labels[:, :140] = -100  # a prompt: not trained on
    labels[1, 250:] = -100
    return ids, labels


def _step(model):
    ids, labels = _batch()
    model.zero_grad()
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_the_cpu_sizes_give_trls_loss_gradients_and_metrics(trl_sizes):
    import trl.trainer.utils as trainer_utils

    from workbench.train.cpu_lm_head import CPU_VOCAB_CHUNK, restore_trl_sizes, size_for_cpu

    model = _model()
    cpu = torch.device("cpu")
    assert not trainer_utils._use_triton(cpu)  # trl scores every position here
    reference, reference_grads = _step(model)

    line = size_for_cpu()
    assert "trained positions only" in line
    assert trainer_utils._use_triton(cpu) and trainer_utils._CHUNKED_LOGPROB_CHUNK_SIZE == CPU_VOCAB_CHUNK
    assert size_for_cpu() == line  # twice is once
    sized, sized_grads = _step(model)

    assert torch.allclose(sized.loss, reference.loss, rtol=1e-5, atol=1e-6)
    mask = _batch()[1][:, 1:] != -100
    for field in ("entropy", "is_top1"):
        a, b = getattr(sized, field), getattr(reference, field)
        assert torch.allclose(a[mask].float(), b[mask].float(), rtol=1e-4, atol=1e-5), field
    assert reference_grads.keys() == sized_grads.keys() and reference_grads
    for name, grad in reference_grads.items():
        assert torch.allclose(sized_grads[name], grad, rtol=1e-4, atol=1e-6), name

    restore_trl_sizes()
    assert not trainer_utils._use_triton(cpu)
    assert trainer_utils._CHUNKED_LOGPROB_CHUNK_SIZE != CPU_VOCAB_CHUNK
