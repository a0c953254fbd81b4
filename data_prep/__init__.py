"""data_prep: datatrove pipelines from raw corpora to Megatron .bin/.idx prefixes and blend files.

Tools (each `python -m data_prep.<tool> --help`):
    tokenize       jsonl / parquet / Hugging Face dataset -> (QA formatting) -> Megatron prefix + stats JSON
    mix            stats of prepared corpora + a stage's mixture -> blend JSON (+ Megatron --data-path)
    synth          the tiny demo corpora, RL prompts, test set and tokenizer
    decontaminate  n-gram overlap of a corpus or prompt set with benchmark test sets
    inspect        decode documents of a prefix, length histogram; verify a blend file
    rl_prompts     RL prompt sets: templated, length-filtered jsonl (the RL stage's tool; docs/rl.md)
    llama3_tokenizer  Meta's Llama-3 tokenizer (128,256 ids) as a Hugging Face directory, built offline
"""

from data_prep.templates import QA_TEMPLATE  # "Question: {question}\nAnswer: {answer}", both styles

__all__ = ["QA_TEMPLATE"]
