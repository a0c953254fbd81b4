"""Weight streaming from the Megatron actor to a rollout engine that holds its own copy (vllm, hf).

`WeightSync.push(model)` walks octomega.convert's `export_hf_weights` (full HF tensors: TP shards gathered,
pipeline stages broadcast, vocabulary padding stripped; collective over the model-parallel group) and hands the
(HF name, tensor) pairs to the engine in buckets of about `bucket_bytes`. Every rank feeds its own engine: with
vLLM colocated under `distributed_executor_backend="external_launcher"`, each training rank holds one vLLM
worker, whose `load_weights` keeps its own tensor-parallel slice of each full tensor.

Receivers (one per engine kind), the protocol being begin() / load(bucket) / end():
- `HFReceiver`: a transformers LlamaForCausalLM (the `hf` backend; tested for real on CPU).
- `VLLMReceiver`: vLLM's offline LLM. Tested against the real engine (vLLM's CPU build, tests/rl/test_vllm_rl.py:
  after every push its greedy tokens equal transformers' on the actor's weights). Where sleep mode exists (GPUs) it
  wakes the weights, loads each bucket, resets the prefix cache (cached KV of the old weights would be reused
  otherwise), then wakes the KV cache, and `sleep()` frees the GPU while training: that part is unverified here.
"""

from __future__ import annotations

import time

import torch

from octomega.convert import export_hf_weights


class WeightSync:
    def __init__(self, receiver, bucket_bytes: int = 512 * 2**20):
        self.receiver, self.bucket_bytes = receiver, bucket_bytes

    def push(self, model_chunks, model_cfg=None) -> dict[str, float]:
        """Stream the current weights to the engine. Collective: every model-parallel rank must call it."""
        t0 = time.perf_counter()
        self.receiver.begin()
        bucket: list[tuple[str, torch.Tensor]] = []
        size = tensors = buckets = total = 0
        for name, tensor in export_hf_weights(model_chunks, model_cfg):
            # Some exported tensors are views of live parameters: the engine gets its own copy.
            t = tensor.detach().clone()
            bucket.append((name, t))
            nbytes = t.numel() * t.element_size()
            size, total, tensors = size + nbytes, total + nbytes, tensors + 1
            if size >= self.bucket_bytes:
                self.receiver.load(bucket)
                bucket, size, buckets = [], 0, buckets + 1
        if bucket:
            self.receiver.load(bucket)
            buckets += 1
        self.receiver.end()
        return {"sync_tensors": tensors, "sync_buckets": buckets, "sync_gb": total / 1e9,
                "time_sync_s": time.perf_counter() - t0}


class HFReceiver:
    """Copies the stream into a live transformers Llama (tied models: lm_head follows embed_tokens)."""

    def __init__(self, model):
        self.model = model
        self.params = dict(model.named_parameters())
        self.seen: set[str] = set()

    def begin(self) -> None:
        self.seen = set()

    @torch.no_grad()
    def load(self, bucket) -> None:
        for name, t in bucket:
            p = self.params.get(name)
            if p is None:
                raise KeyError(f"the rollout model has no parameter {name!r}")
            if tuple(p.shape) != tuple(t.shape):
                raise ValueError(f"{name}: rollout model {list(p.shape)} vs actor {list(t.shape)}")
            p.copy_(t.to(device=p.device, dtype=p.dtype))
            self.seen.add(name)

    def end(self) -> None:
        missing = sorted(n for n in self.params if n not in self.seen and n != "lm_head.weight")
        if missing:
            raise RuntimeError(f"weight stream incomplete: {missing[:5]}{'...' if len(missing) > 5 else ''} not sent")

    def sleep(self) -> None:
        pass


def _vllm_begin_reload(worker) -> None:
    """On each vLLM worker: vLLM's layer-wise in-place reload, opened (loaders wrapped; each module is processed,
    e.g. repacked for the CPU kernels, as soon as all its weights have arrived, whatever bucket they came in).
    Each phase runs under the worker's config, as vLLM's own Worker.reload_weights does: the processing after
    loading reads it (without it the CPU build repacks the weights wrongly and generates garbage)."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload.layerwise import initialize_layerwise_reload

    with set_current_vllm_config(worker.vllm_config):
        initialize_layerwise_reload(worker.model_runner.get_model())


def _vllm_load(worker, weights) -> None:
    from vllm.config import set_current_vllm_config

    with set_current_vllm_config(worker.vllm_config):
        worker.model_runner.get_model().load_weights(weights)


def _vllm_end_reload(worker) -> None:
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload.layerwise import finalize_layerwise_reload

    model = worker.model_runner.get_model()
    with set_current_vllm_config(worker.vllm_config):
        finalize_layerwise_reload(model, worker.vllm_config.model_config)
        # A tied output layer shares the embedding's weight but receives no tensor of its own (its loader skips
        # lm_head), so the reload never processes it: on CPU it would keep the GEMM packed from the old weights.
        lm_head = getattr(model, "lm_head", None)
        if lm_head is not None and getattr(worker.vllm_config.model_config.hf_config, "tie_word_embeddings", False):
            lm_head.quant_method.process_weights_after_loading(lm_head)


class VLLMReceiver:
    """A colocated vLLM engine, loaded with vLLM's own in-place reload (what ``LLM.collective_rpc("reload_weights",
    ...)`` runs, split in three so that buckets can divide a layer): begin() opens the layer-wise reload on every
    worker, load() hands each bucket to the model's ``load_weights``, end() finalises it and resets the prefix cache
    (its KV was computed with the old weights). One ``reload_weights`` call per bucket would process vLLM's fused
    modules (q/k/v, gate/up) half loaded when a bucket ends inside a layer; calling ``load_weights`` without the
    layer-wise wrapping fails on vLLM's CPU build ("'Parameter' object has no attribute 'weight_loader'": the
    repacked layers leave an empty Parameter). The functions run on the workers are module-level, so that an engine
    in another process can import them.

    sleep_level: None when the engine was built without sleep mode (vLLM refuses it on CPU): the engine then stays
    awake; 1 = weights to host RAM while the actor trains, 2 = discarded (they are reloaded anyway)."""

    def __init__(self, llm, sleep_level: int | None = 1):
        self.llm, self.sleep_level = llm, sleep_level
        self.asleep = False

    def sleep(self) -> None:
        if self.sleep_level is not None and not self.asleep:
            self.llm.sleep(level=self.sleep_level)
            self.asleep = True

    def begin(self) -> None:
        if self.asleep:
            self.llm.wake_up(tags=["weights"])  # weights only: the KV cache stays freed while loading
        self.llm.collective_rpc(_vllm_begin_reload)

    def load(self, bucket) -> None:
        self.llm.collective_rpc(_vllm_load, args=(bucket,))

    def end(self) -> None:
        self.llm.collective_rpc(_vllm_end_reload)
        self.llm.reset_prefix_cache()
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
