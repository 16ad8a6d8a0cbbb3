"""trl's fused LM head, sized for a CPU.

trl 1.x computes the SFT loss through a chunked log-prob head (`trl.kernels.
ChunkedLogProbFunction`) that never materializes the `(tokens, vocabulary)` logits. Its tiles
are sized for a GPU, 4,096 tokens by 32,768 vocabulary entries (512 MB in fp32), and on a
device without Triton it scores every position, the prompt's too, so that tile shapes stay
fixed for compiled backends (trl's comment names Neuron). On a CPU both cost time: every
elementwise step of the fold streams a 512 MB tile through memory (and through the
allocator: glibc hands such blocks back to the kernel and faults them in again), and about
half of an instruction row's positions are prompt tokens whose scores are thrown away.

For a run on the CPU the workbench scores only the trained positions (as trl does on CUDA)
with tiles that fit a core's cache. The loss, its gradients and the logged metrics are the
same up to float summation order (tests/test_cpu_lm_head.py); bench/lm_head_cpu.md has the
timings. It changes trl's module settings for the whole process, which is the training
worker's own; on a GPU nothing is changed.
"""

from __future__ import annotations

# 256 tokens x 4,096 vocabulary entries: a 4 MB fp32 tile (bench/lm_head_cpu.md: the
# fastest of the sizes tried on 2 cores; larger tiles were slower, smaller ones no faster).
CPU_TOKEN_CHUNK = 256
CPU_VOCAB_CHUNK = 4096

_MARK = "_workbench_scores_trained_positions_on_cpu"
_TRL_SIZES: dict[str, int] = {}  # trl's own tile sizes, kept for restore_trl_sizes


def size_for_cpu() -> str:
    """Set trl's fused head up for the CPU; a line for the run's log. trl versions whose
    internals differ are left alone (the line says so): correct, only slower."""
    try:
        import trl.kernels.chunked_logprob as kernel
        import trl.trainer.utils as trainer_utils
    except ImportError:
        return "fused LM head: trl's kernel not found, left as it is"
    needed = (hasattr(kernel, "TOKEN_CHUNK_SIZE")
              and hasattr(trainer_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE")
              and callable(getattr(trainer_utils, "_use_triton", None)))
    if not needed:
        return "fused LM head: this trl version's tiles are not adjustable, left as they are"
    _TRL_SIZES.setdefault("tokens", kernel.TOKEN_CHUNK_SIZE)
    _TRL_SIZES.setdefault("vocabulary", trainer_utils._CHUNKED_LOGPROB_CHUNK_SIZE)
    if not getattr(trainer_utils._use_triton, _MARK, False):
        on_gpu = trainer_utils._use_triton

        # trl asks this only to choose between scoring the trained positions ("compact") and
        # every position; the kernel module keeps its own reference for choosing Triton.
        def compact_on_cpu(device):
            return device.type == "cpu" or on_gpu(device)

        setattr(compact_on_cpu, _MARK, on_gpu)
        trainer_utils._use_triton = compact_on_cpu
    kernel.TOKEN_CHUNK_SIZE = CPU_TOKEN_CHUNK
    trainer_utils._CHUNKED_LOGPROB_CHUNK_SIZE = CPU_VOCAB_CHUNK
    return (f"fused LM head on the CPU: trained positions only, tiles of {CPU_TOKEN_CHUNK} "
            f"tokens x {CPU_VOCAB_CHUNK} vocabulary entries")


def restore_trl_sizes() -> None:
    """Undo size_for_cpu (tests compare both in one process)."""
    import trl.kernels.chunked_logprob as kernel
    import trl.trainer.utils as trainer_utils

    original = getattr(trainer_utils._use_triton, _MARK, None)
    if original is not None:
        trainer_utils._use_triton = original
    if _TRL_SIZES:
        kernel.TOKEN_CHUNK_SIZE = _TRL_SIZES["tokens"]
        trainer_utils._CHUNKED_LOGPROB_CHUNK_SIZE = _TRL_SIZES["vocabulary"]
