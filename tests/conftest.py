import os

import pytest

# Tests run on the CPU even where a GPU exists, unless marked gpu.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def gpu_skip_reason() -> str | None:
    """Why tests marked `gpu` cannot run here, or None when they can: octomega uses a GPU when CUDA is available
    and OCTOMEGA_DEVICE is not cpu (octomega.runtime.use_gpu)."""
    if os.environ.get("OCTOMEGA_DEVICE", "").lower() == "cpu":
        return "needs a CUDA GPU: OCTOMEGA_DEVICE=cpu keeps octomega on the CPU"
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        return f"needs a CUDA GPU: torch does not import ({type(e).__name__})"
    if not torch.cuda.is_available():
        return ("needs a CUDA GPU: torch.cuda.is_available() is False here (the GPU tier runs on a GPU machine: "
                "pytest -m gpu tests/gpu, or bench/device_check.sh)")
    return None


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    reason = gpu_skip_reason() if gpu_items else None
    if reason:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    """The tiny recipes' synthetic corpora (data_prep.synth -> tokenize -> mix), built once per session.
    Returns the root to use as OCTOMEGA_TINY_ROOT (blends under <root>/data/blends)."""
    from recipes.tiny import ensure_data

    root = tmp_path_factory.mktemp("tiny_root")
    ensure_data(root=root)
    return root


@pytest.fixture(scope="session")
def tiny_long_cot_root(tmp_path_factory):
    """The tiny pipeline's decay-long model, trained once per session with octomega's own trainer and the
    unchanged recipes (tiny_stable, 800 steps, then tiny_decay_long, 350 steps; pinned numerics, losses logged
    every 10 steps): the RL learning tests start from it and tests/train/test_golden.py checks both runs' losses
    against the golden numbers. Returns the tiny root (runs under <root>/tiny_stable, <root>/tiny_decay_long)."""
    from octomega.testing import run_pinned

    root = tmp_path_factory.mktemp("tiny_long_cot_root")
    run_pinned(root, "train", "tiny_stable", "logging.wandb=false", "logging.log_interval=10")
    run_pinned(root, "train", "tiny_decay_long", "logging.wandb=false", "logging.log_interval=10")
    return root


@pytest.fixture(scope="session")
def llama3_tokenizer_dir(tmp_path_factory):
    """Meta's real Llama-3 tokenizer (128,256 ids) as a Hugging Face directory, built once per session from the
    llama-models package (data_prep.llama3_tokenizer; nothing downloaded). Skips when llama-models/tiktoken are
    not installed (pip install 'octomega[llama3]', also in the dev extra)."""
    from data_prep.llama3_tokenizer import Llama3Unavailable, build_llama3_tokenizer

    try:  # only a missing package skips: a build that fails is a test failure
        return build_llama3_tokenizer(tmp_path_factory.mktemp("llama3_tokenizer"))
    except Llama3Unavailable as e:
        pytest.skip(f"real Llama-3 tokenizer unavailable: {e}")


@pytest.fixture(scope="session")
def tiny_llama3_dir(tmp_path_factory, llama3_tokenizer_dir):
    """A random tiny transformers LlamaForCausalLM with Llama 3's real vocabulary (128,256 ids) and Meta's tokenizer
    (llama3_tokenizer_dir's files): hidden 64, 2 layers, 8 query / 4 KV heads (TP up to 4), untied embeddings,
    Llama-3.1 rope scaling, random norm weights (a wrong mapping shows), fp32, bos 128000, eos [128001, 128009]."""
    import shutil

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from data_prep.llama3_tokenizer import FILES

    out = tmp_path_factory.mktemp("tiny_llama3")
    stop = [128_001, 128_009]
    config = LlamaConfig(
        vocab_size=128_256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 1024},
        tie_word_embeddings=False, initializer_range=0.2, bos_token_id=128_000, eos_token_id=stop)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    model.generation_config = GenerationConfig(bos_token_id=128_000, eos_token_id=stop)
    model.save_pretrained(str(out))
    for f in FILES:
        shutil.copy2(llama3_tokenizer_dir / f, out / f)
    return out


# ---- models shared by several test folders (built here, never downloaded) ---------------------------------------


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory):
    """{shape name: HF directory} of fp32 random Llamas (seeded; one per shape of tiny_shapes()): tests/convert and
    tests/model."""
    import torch

    from octomega.convert.random_llama import tiny_shapes, write_random_llama

    root = tmp_path_factory.mktemp("hf_llamas")
    return {name: write_random_llama(root / name, cfg, dtype=torch.float32, seed=i)
            for i, (name, cfg) in enumerate(tiny_shapes().items())}


@pytest.fixture
def world1():
    """torch.distributed + Megatron parallel state for this process at TP=1/PP=1 (idempotent)."""
    from octomega.convert.commands import single_process_runtime

    return single_process_runtime()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """octomega.generate.tiny's random Llama (hidden 64, 2 layers) and its Llama-3-style tokenizer, built once per
    session with one torch thread: tests/eval and tests/generate."""
    import torch

    from octomega.generate.tiny import build_tiny_llama

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))
    finally:
        torch.set_num_threads(n)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test, restored after it: the tiny models gain nothing from intra-op threads, and on
    a busy 2-core machine OpenMP's spinning threads make them 10-20x slower. A folder whose every test wants it
    uses it from an autouse fixture of its conftest."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def vllm():
    """The real vLLM (its CPU build here: scripts/bootstrap.sh installs it on machines without a CUDA GPU). Skips
    when it is not installed, except under OCTOMEGA_REQUIRE_VLLM=1 (CI), where that is a failure."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process (seconds to start)
    try:
        import vllm as module
    except ImportError as e:
        msg = f"vLLM is not installed ({e}): `make venv` installs its CPU build"
        if os.environ.get("OCTOMEGA_REQUIRE_VLLM") == "1":
            pytest.fail(msg + " (OCTOMEGA_REQUIRE_VLLM=1)")
        pytest.skip(msg)
    return module


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory):
    """octomega.generate.tiny's random Llama with head_dim 32 (hidden 64, 2 query heads / 1 key-value head): vLLM's
    CPU attention has no head_dim 16, the size of tiny_model_dir's heads."""
    import torch

    from octomega.generate.tiny import build_tiny_llama

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama_hd32"), heads=2, kv_heads=1, max_positions=2048)
    finally:
        torch.set_num_threads(n)
