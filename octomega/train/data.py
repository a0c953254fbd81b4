"""Training and validation data: Megatron blends -> GPTDataset -> micro-batches.

Document boundaries (decided here, checked by octomega.config's `check_document_policy`):
- Sequences are PACKED: documents are concatenated with their EOD token (`<|end_of_text|>`) between them and
  cut into `seq_length + 1` token windows (Megatron's GPTDataset), so no token is padding.
- Attention and positions do NOT reset at document ends: the causal kernels used here (SDPA `is_causal`, TE
  causal) cannot mask per document without a packed THD format, and GPTModel's RoPE ignores position_ids.
  `data.reset_attention_mask` and `data.reset_position_ids` are therefore refused, never silently ignored.
  No s x s attention mask is built (create_attention_mask=False).
- `data.eod_mask_loss` (drop the loss on the token after an EOD) is honoured: it is a loss mask only.

Every sample's token ids are checked against the vocabulary as it is read (octomega/train/checked_dataset.py): an
id outside it is one error naming the .bin file and the document. DataLoader workers (`data.num_workers`) die with
the training process, also when it is killed by SIGKILL (octomega/lifetime.py).

Order: the global batch of step s is samples [s*G, (s+1)*G) of the blended dataset, G = global batch size,
whatever the DP size and micro-batch split (Megatron's pretraining sampler order). Resuming at step s restarts
exactly there.

Validation: one fixed held-out set per corpus (the blend file's "valid" entries, or `data.valid_blend`'s),
the same sequences at every pass, so the loss curves of the stable stage and of each decay branch compare.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from octomega.config import ConfigError, RunConfig, check_document_policy
from octomega.lifetime import die_with_parent


@dataclass
class TokenizerInfo:
    """What GPTDataset needs of a tokenizer."""

    vocab_size: int
    eod: int
    pad: int = -1  # never a real token: nothing is masked or rewritten as padding
    path: str | None = None

    @property
    def unique_identifiers(self) -> dict:
        return {"class": "octomega", "vocab_size": self.vocab_size, "eod": self.eod}

    eos = property(lambda self: self.eod)
    special_tokens_dict = property(lambda self: {})


def load_tokenizer_info(path: str | None, fallback_vocab: int) -> TokenizerInfo:
    if path is None:
        return TokenizerInfo(vocab_size=fallback_vocab, eod=fallback_vocab - 1)
    from transformers import AutoTokenizer

    if not Path(path).exists():
        raise ConfigError(f"data.tokenizer: {path} does not exist (give the HF tokenizer directory of the corpus)")
    tok = AutoTokenizer.from_pretrained(path)
    eod = tok.convert_tokens_to_ids("<|end_of_text|>") if "<|end_of_text|>" in tok.get_vocab() else tok.eos_token_id
    if eod is None:
        raise ConfigError(f"data.tokenizer {path}: no <|end_of_text|> or eos token to separate documents")
    return TokenizerInfo(vocab_size=len(tok), eod=int(eod), path=path)


def read_blend(path: str) -> dict:
    """Validate and read a blend file written by `python -m data_prep.mix`."""
    from data_prep.mix import load_blend

    return load_blend(path)


def _gpt_config(cfg: RunConfig, tok: TokenizerInfo, cache: str, blend_per_split):
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    return GPTDatasetConfig(
        random_seed=cfg.train.seed,
        sequence_length=cfg.train.seq_length,
        blend_per_split=blend_per_split,
        path_to_cache=cache,
        tokenizer=tok,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=cfg.data.eod_mask_loss,
        create_attention_mask=False,
        mmap_bin_files=True,
    )


def _build(cfg, tok, cache, split_index: int, prefixes, weights, num_samples: int):
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    from octomega.train.checked_dataset import VocabCheckedGPTDataset

    per_split = [None, None, None]
    per_split[split_index] = (prefixes, weights)
    sizes = [0, 0, 0]
    sizes[split_index] = num_samples
    datasets = BlendedMegatronDatasetBuilder(
        VocabCheckedGPTDataset, sizes, lambda: True, _gpt_config(cfg, tok, cache, per_split)).build()
    return datasets[split_index]


class MockDataset(torch.utils.data.Dataset):
    """Random tokens (seeded per index) for throughput benchmarks: no files, same shapes as GPTDataset."""

    def __init__(self, seq_length: int, vocab_size: int, seed: int, size: int):
        self.seq_length, self.vocab_size, self.seed, self.size = seq_length, vocab_size, seed, size

    def __len__(self):
        return self.size

    def __getitem__(self, idx):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(idx))
        text = torch.randint(0, self.vocab_size, (self.seq_length + 1,), generator=g)
        return {"tokens": text[:-1], "labels": text[1:], "loss_mask": torch.ones(self.seq_length),
                "position_ids": torch.arange(self.seq_length)}


def check_prefix(prefix: str) -> None:
    """A corpus's .bin/.idx pair is whole and consistent (sizes, sequence pointers, document index), checked in
    one pass over the index before Megatron reads it: a ConfigError naming the file otherwise."""
    from data_prep.megatron_io import PrefixError, read_index

    try:
        read_index(prefix)
    except PrefixError as e:
        raise ConfigError(f"data: {e}") from None


def build_datasets(cfg: RunConfig, num_train_samples: int, dp: int):
    """(train dataset, {valid name: dataset}, blend dict or None, tokenizer info)."""
    check_document_policy(cfg.data)
    tok = load_tokenizer_info(cfg.data.tokenizer, cfg.model.vocab_size)
    if tok.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"data.tokenizer has {tok.vocab_size} ids but model.vocab_size={cfg.model.vocab_size}")
    n_valid = cfg.train.valid_batches * cfg.train.micro_batch_size * dp
    if cfg.data.mock:
        return (MockDataset(cfg.train.seq_length, tok.vocab_size, cfg.train.seed, num_train_samples),
                {"mock": MockDataset(cfg.train.seq_length, tok.vocab_size, cfg.train.seed + 1, n_valid)}, None, tok)
    if not cfg.data.blend:
        raise ConfigError("data.blend is not set: give a blend file from `python -m data_prep.mix` "
                          "(or data.mock=true for random tokens)")
    blend = read_blend(cfg.data.blend)
    if blend.get("tokenizer_fingerprint") and cfg.data.tokenizer:
        from data_prep.tokenizer_utils import tokenizer_fingerprint

        have = tokenizer_fingerprint(cfg.data.tokenizer)
        if have != blend["tokenizer_fingerprint"]:
            raise ConfigError(f"{cfg.data.blend}: corpora were tokenized with another tokenizer than "
                              f"data.tokenizer={cfg.data.tokenizer} (fingerprint {blend['tokenizer_fingerprint']} "
                              f"vs {have})")
    cache = os.path.join(cfg.resolved_run_dir, "data_cache")
    prefixes = [c["prefix"] for c in blend["corpora"]]
    valid_blend = read_blend(cfg.data.valid_blend) if cfg.data.valid_blend else blend
    for prefix in prefixes + [v["prefix"] for v in valid_blend.get("valid", [])]:
        check_prefix(prefix)
    weights = [float(c["weight"]) for c in blend["corpora"]]
    train = _build(cfg, tok, cache, 0, prefixes, weights, num_train_samples)
    valid = {v["name"]: _build(cfg, tok, cache, 1, [v["prefix"]], None, n_valid) for v in valid_blend.get("valid", [])}
    return train, valid, blend, tok


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Yields this DP rank's micro-batches: micro-batch m of step s takes samples
    s*G + m*(mbs*dp) + rank*mbs ... + mbs, so a global batch is the same set of samples for any dp/mbs."""

    def __init__(self, *, start_step: int, steps: int, global_batch: int, micro_batch: int, dp: int, rank: int):
        self.start_step, self.steps, self.G, self.mbs, self.dp, self.rank = (
            start_step, steps, global_batch, micro_batch, dp, rank)

    def __iter__(self):
        per_step = self.G // (self.mbs * self.dp)
        for s in range(self.start_step, self.steps):
            for m in range(per_step):
                first = s * self.G + m * self.mbs * self.dp + self.rank * self.mbs
                yield list(range(first, first + self.mbs))

    def __len__(self):
        return (self.steps - self.start_step) * (self.G // (self.mbs * self.dp))


def _collate(samples):
    return {k: torch.stack([torch.as_tensor(np.asarray(s[k])) for s in samples]) for k in
            ("tokens", "labels", "loss_mask", "position_ids")}


def train_iterator(dataset, cfg: RunConfig, *, start_step: int, steps: int, dp: int, dp_rank: int):
    sampler = GlobalBatchSampler(start_step=start_step, steps=steps, global_batch=cfg.train.global_batch_size,
                                 micro_batch=cfg.train.micro_batch_size, dp=dp, rank=dp_rank)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=_collate,
                                         num_workers=cfg.data.num_workers, persistent_workers=False,
                                         worker_init_fn=partial(_worker_init, owner_pid=os.getpid()))
    return iter(loader)


def _worker_init(worker_id: int, *, owner_pid: int) -> None:
    """In each DataLoader worker: end with the training process (torch's own check notices a dead parent only
    between batches, every few seconds, and never in a worker stuck reading)."""
    die_with_parent(owner_pid)


def valid_iterator(dataset, cfg: RunConfig, *, dp: int, dp_rank: int):
    """The same `valid_batches` micro-batches of this rank at every pass."""
    mbs = cfg.train.micro_batch_size
    for b in range(cfg.train.valid_batches):
        first = b * mbs * dp + dp_rank * mbs
        yield _collate([dataset[i] for i in range(first, first + mbs)])


def blend_fingerprint(blend: dict | None) -> str | None:
    if blend is None:
        return None
    import hashlib

    key = json.dumps([(c["name"], os.path.basename(c["prefix"]), round(float(c["weight"]), 9), c.get("tokens"))
                      for c in blend["corpora"]], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]
