"""The `hf` backend: transformers models, batched with left padding and a KV cache, on CPU or GPU.

Our own decoding loop rather than ``model.generate``: rows that finish (stop token, stop string, length) leave
the batch at once, with their KV-cache rows, instead of riding along until the longest row ends; and each
sample keeps the log-probability of its tokens and its own seeded RNG stream (see sampling.py).
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from octomega.generate.interface import (
    LLAMA3_PAD_TOKENS,
    LLAMA3_STOP_TOKENS,
    Completion,
    Generator,
    SamplingParams,
)
from octomega.generate.registry import register_backend
from octomega.generate.sampling import expand_samples, make_generators, row_completion, sample_next, sample_rows


def check_hf_model_dir(path: str | os.PathLike) -> Path:
    """Raise a clear error unless ``path`` is a Hugging Face model directory (config.json + weights + tokenizer)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model path {str(p)!r} does not exist")
    if not p.is_dir():
        raise ValueError(f"model path {str(p)!r} is a file; pass a Hugging Face model directory")
    from octomega.checkpoint import is_checkpoint_path

    if is_checkpoint_path(p):  # a run dir has a config.json too: octomega's, not an HF one
        raise ValueError(f"{str(p)!r} is an octomega run or Megatron checkpoint, not a Hugging Face model directory: "
                         "convert it with `octomega convert mcore-to-hf` or use --backend megatron")
    if not (p / "config.json").is_file():
        raise ValueError(f"{str(p)!r} is not a Hugging Face model directory: config.json is missing")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise ValueError(f"{str(p)!r} has a config.json but no weights (*.safetensors or *.bin)")
    if not (p / "tokenizer.json").is_file() and not (p / "tokenizer_config.json").is_file():
        raise ValueError(f"{str(p)!r} has no tokenizer (tokenizer.json / tokenizer_config.json)")
    return p


def torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """torch.bfloat16 or "bfloat16" / "bf16" / "fp32"... -> torch dtype (None stays None)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "fp64": "float64"}.get(
        str(dtype), str(dtype))
    if not isinstance(getattr(torch, name, None), torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or float64")
    return getattr(torch, name)


def stop_token_ids_for(tokenizer, model=None) -> list[int]:
    """EOS ids of the tokenizer and the model's generation config, plus Llama-3's stop tokens when in the vocab."""
    ids: set[int] = set()
    for src in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(int(i) for i in src)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in LLAMA3_STOP_TOKENS if t in vocab)
    return sorted(ids)


def pad_token_id_for(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    vocab = tokenizer.get_vocab()
    for t in LLAMA3_PAD_TOKENS:
        if t in vocab:
            return vocab[t]
    return int(stop_token_ids_for(tokenizer)[0])  # masked out anyway: any id works


@register_backend("hf")
class HFGenerator(Generator):
    """``HFGenerator("/path/to/hf_dir")`` or ``HFGenerator(model, tokenizer=tok)`` (a live PreTrainedModel).

    batch_size: rows (prompt x sample) per forward pass. dtype: defaults to bf16 on GPU, fp32 on CPU.
    stop_token_ids: override the stop tokens (default: EOS + <|end_of_text|> + <|eot_id|>).
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, device: str | torch.device | None = None,
                 dtype: torch.dtype | str | None = None, batch_size: int = 32,
                 stop_token_ids: Sequence[int] | None = None, attn_implementation: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model, (str, os.PathLike)):
            path = check_hf_model_dir(model)
            device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            dtype = torch_dtype(dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
            kw = {"attn_implementation": attn_implementation} if attn_implementation else {}
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kw).to(device).eval()
        else:  # a live model (e.g. the RL actor): used in place, in eval mode only while generating
            if tokenizer is None:
                raise ValueError("HFGenerator with a live model needs its tokenizer: HFGenerator(model, tokenizer=tok)")
            if device is not None:
                model = model.to(device)
            if dtype is not None:
                model = model.to(torch_dtype(dtype))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.device = next(model.parameters()).device
        self.stop_token_ids = list(stop_token_ids) if stop_token_ids is not None else stop_token_ids_for(tokenizer, model)
        self.pad_token_id = pad_token_id_for(tokenizer)
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        self._keep_kw = "logits_to_keep" in params

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        return [list(x) for x in self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        encoded = self.encode(prompts)
        if any(not ids for ids in encoded):
            raise ValueError("a prompt encodes to no tokens (empty prompt and no BOS): give it at least one token")
        rows = sample_rows(encoded, params)
        results: dict[tuple[int, int], Completion] = {}
        was_training = self.model.training
        self.model.eval()  # no dropout while generating; a live model gets its mode back below
        try:
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                decoded = self._decode([encoded[i] for i, _ in chunk], chunk, params)
                for row, (ids, lps, reason) in zip(chunk, decoded):
                    results[row] = row_completion(self.decode, row, ids, lps, reason, params.stop,
                                                  keep_stop_tokens=params.keep_stop_tokens)
        finally:
            self.model.train(was_training)
        return expand_samples(results, len(prompts), params)

    def _forward(self, input_ids, attention_mask, position_ids, cache, keep_last: bool) -> torch.Tensor:
        kw = {self._cache_kw: cache, "use_cache": True}
        if keep_last and self._keep_kw:
            kw["logits_to_keep"] = 1  # prefill: project only the last position (vocab x prompt would be huge)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kw)
        return out.logits[:, -1, :]

    @torch.inference_mode()
    def _decode(self, prompts: list[list[int]], rows: list[tuple[int, int]], params: SamplingParams):
        """Decode one batch of rows. Returns [(token_ids, logprobs, finish_reason)] in row order."""
        from transformers import DynamicCache

        dev, n = self.device, len(prompts)
        width = max(len(p) for p in prompts)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long, device=dev)
        attn = torch.zeros((n, width), dtype=torch.long, device=dev)
        for r, p in enumerate(prompts):  # left padding: every row's last prompt token sits in the last column
            input_ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long, device=dev)
            attn[r, width - len(p):] = 1
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        try:
            cache = DynamicCache(config=self.model.config)
        except TypeError:  # older transformers
            cache = DynamicCache()
        logits = self._forward(input_ids, attn, pos, cache, keep_last=True)
        next_pos = pos[:, -1] + 1
        gens = make_generators(params, rows, dev)
        stop_ids = torch.tensor(self.stop_token_ids or [-1], device=dev)
        tail = max((len(s) for s in params.stop), default=0) + 1  # tokens that can hold a stop string
        out_ids: list[list[int]] = [[] for _ in range(n)]
        out_lps: list[list[float]] = [[] for _ in range(n)]
        reason: list[str] = ["length"] * n
        active = list(range(n))  # row index of each position in the (shrinking) batch
        for step in range(params.max_new_tokens):
            tokens, lps = sample_next(logits, params, [gens[r] for r in active])
            is_stop = torch.isin(tokens, stop_ids).tolist()
            keep = []
            for b, (r, t, lp) in enumerate(zip(active, tokens.tolist(), lps.tolist())):
                out_ids[r].append(t)
                out_lps[r].append(lp)
                if is_stop[b] or (tail > 1 and any(s in self.decode(out_ids[r][-tail:]) for s in params.stop)):
                    reason[r] = "stop"
                elif step + 1 < params.max_new_tokens:
                    keep.append(b)
            if not keep:
                break
            if len(keep) < len(active):  # finished rows leave the batch together with their cache rows
                idx = torch.tensor(keep, device=dev)
                cache.batch_select_indices(idx)
                attn, tokens, next_pos = attn[idx], tokens[idx], next_pos[idx]
                active = [active[b] for b in keep]
            attn = torch.cat([attn, attn.new_ones((len(active), 1))], dim=-1)
            logits = self._forward(tokens[:, None], attn, next_pos[:, None], cache, keep_last=False)
            next_pos = next_pos + 1
        return [(out_ids[r], out_lps[r], reason[r]) for r in range(n)]
