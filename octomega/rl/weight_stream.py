"""Weight streaming from the Megatron actor to a rollout engine that holds its own copy (vllm, hf).

`WeightSync.push(model)` walks octomega.convert's `export_hf_weights` (full HF tensors: TP shards gathered,
pipeline stages broadcast, vocabulary padding stripped; collective over the model-parallel group) and hands the
(HF name, tensor) pairs to the engine in buckets of about `bucket_bytes`. Every rank feeds its own engine: with
vLLM colocated under `distributed_executor_backend="external_launcher"`, each training rank holds one vLLM
worker, whose `load_weights` keeps its own tensor-parallel slice of each full tensor.

Receivers (one per engine kind), the protocol being begin() / load(bucket) / end():
- `HFReceiver`: a transformers LlamaForCausalLM (the `hf` backend; tested for real on CPU).
- `VLLMReceiver`: vLLM's offline LLM with sleep mode. UNVERIFIED: vLLM cannot be installed on the machines this
  was written on (its own torch pin, GPU only); tested only against a fake engine that records the stream
  (tests/rl/test_weight_sync.py). It wakes the weights, loads each bucket on the worker
  (`model_runner.model.load_weights`, through `LLM.collective_rpc`), resets the prefix cache (cached KV of the
  old weights would be reused otherwise), then wakes the KV cache. `sleep()` frees the GPU while training.
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


def _vllm_load_weights(worker, weights):
    """Runs on each vLLM worker (LLM.collective_rpc passes the worker as the first argument)."""
    worker.model_runner.model.load_weights(weights=weights)


class VLLMReceiver:
    """A colocated vLLM engine (`vllm.LLM(..., enable_sleep_mode=True)`). UNVERIFIED on a GPU cluster."""

    def __init__(self, llm, sleep_level: int = 1):
        self.llm, self.sleep_level = llm, sleep_level
        self.asleep = False

    def sleep(self) -> None:
        if not self.asleep:
            self.llm.sleep(level=self.sleep_level)
            self.asleep = True

    def begin(self) -> None:
        if self.asleep:
            self.llm.wake_up(tags=["weights"])  # weights only: the KV cache stays freed while loading

    def load(self, bucket) -> None:
        self.llm.collective_rpc(_vllm_load_weights, args=(bucket,))

    def end(self) -> None:
        self.llm.reset_prefix_cache()
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
