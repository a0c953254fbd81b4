"""A step's samples as tensors, and how they are cut into mini-batches, data-parallel slices and micro-batches.

Rows are grouped by prompt: rows [i * n, (i + 1) * n) are the n samples of the step's prompt i, so a mini-batch
of P prompts is a contiguous block of P * n rows, and data-parallel rank d takes the d-th contiguous slice of it.
Per-token tensors are [rows, T] and aligned with `tokens`: entry [r, t] belongs to the token tokens[r, t]
(its log-probability is computed from the logits at position t - 1). `mask` is 1 on response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

PAD_MULTIPLE = 8  # sequence lengths are padded to a multiple of this (x TP: sequence parallelism splits them)


@dataclass
class TensorBatch:
    """Named tensors sharing their first dimension (rows); per-token ones share the second (T) too."""

    data: dict[str, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.data[key]

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        self.data[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self.data

    @property
    def num_rows(self) -> int:
        return int(self.data["tokens"].shape[0])

    @property
    def width(self) -> int:
        return int(self.data["tokens"].shape[1])

    def rows(self, start: int, stop: int) -> "TensorBatch":
        return TensorBatch({k: v[start:stop] for k, v in self.data.items()})

    def lengths(self) -> torch.Tensor:
        """Tokens per row (prompt + response)."""
        return self.data["prompt_len"] + self.data["resp_len"]

    def with_width(self, width: int) -> "TensorBatch":
        """Per-token tensors cut or zero-padded to `width` columns (padding is masked out: mask 0)."""
        T = self.width

        def fit(v):
            if v.dim() != 2 or v.shape[1] != T:
                return v
            if width <= T:
                return v[:, :width]
            return torch.cat([v, v.new_zeros((v.shape[0], width - T))], dim=1)

        return TensorBatch({k: fit(v) for k, v in self.data.items()})


def padded_width(lengths: torch.Tensor, multiple: int, cap: int | None = None) -> int:
    w = int(lengths.max()) if lengths.numel() else 1
    w = -(-w // multiple) * multiple
    return min(w, cap) if cap is not None else w


def build_batch(prompt_ids: list[list[int]], response_ids: list[list[int]], engine_logps: list[list[float]],
                group: list[int], pad_id: int) -> TensorBatch:
    """Rows of prompt + response token ids -> TensorBatch (right padding with pad_id, masked out)."""
    n = len(prompt_ids)
    lens = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    T = max(lens) if lens else 1
    tokens = torch.full((n, T), pad_id, dtype=torch.long)
    mask = torch.zeros((n, T), dtype=torch.float32)
    elp = torch.full((n, T), float("nan"), dtype=torch.float32)
    for i, (p, r, lp) in enumerate(zip(prompt_ids, response_ids, engine_logps)):
        tokens[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        if r:
            tokens[i, len(p): len(p) + len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, len(p): len(p) + len(r)] = 1.0
            if lp is not None and len(lp) == len(r):
                elp[i, len(p): len(p) + len(r)] = torch.tensor(lp, dtype=torch.float32)
    return TensorBatch({"tokens": tokens, "mask": mask, "engine_logp": elp,
                        "prompt_len": torch.tensor([len(p) for p in prompt_ids], dtype=torch.long),
                        "resp_len": torch.tensor([len(r) for r in response_ids], dtype=torch.long),
                        "group": torch.tensor(group, dtype=torch.long)})


def micro_batches(batch: TensorBatch, size: int, width: int) -> list[dict[str, torch.Tensor]]:
    """Consecutive micro-batches of `size` rows, every one `width` tokens wide (pipeline stages exchange
    activations of one fixed shape), with the position ids the model needs."""
    b = batch.with_width(width)
    out = []
    for start in range(0, b.num_rows, size):
        mb = b.rows(start, start + size).data
        rows = mb["tokens"].shape[0]
        mb = dict(mb)
        mb["position_ids"] = torch.arange(width, dtype=torch.long).unsqueeze(0).expand(rows, width).contiguous()
        out.append(mb)
    return out
