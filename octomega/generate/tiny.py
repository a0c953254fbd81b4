"""A tiny random Llama + Llama-3-style byte-level BPE tokenizer, saved as a Hugging Face directory.

For tests and CPU benchmarks only: nothing is downloaded. The tokenizer is trained in a second on a small
built-in corpus; it has Llama-3's special tokens (<|begin_of_text|> prepended to every prompt, <|end_of_text|>
and <|eot_id|> as stop tokens, <|pad|>) and splits digits one per token like the tiny pipeline's tokenizer.
"""
from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|pad|>"]

_CORPUS = [
    "Question: Tom has 12 apples and buys 7 more. How many apples does he have?\nAnswer: 12 + 7 = 19. "
    "The answer is \\boxed{19}.",
    "Q: There are 15 trees in the grove. How many trees did the grove workers plant today?\nA: 21 - 15 = 6. "
    "The answer is 6.",
    "Problem:\nFind the domain of the expression $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.\n\nSolution:\n"
    "Final Answer: The final answer is $[2,5)$. I hope it is correct.",
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "User: You must put your answer inside \\boxed{} and Your final answer will be extracted automatically.",
    "What of the following is the right choice? Explain your answer. (A) 14, (B) 4, (C) 2, (D) 24",
    "the of and to in is that for it as with was on be by at this are from or an which one all has",
]


def build_tokenizer(vocab_size: int = 384):
    """Train a byte-level BPE on the built-in corpus; return a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(  # prepend BOS like Llama-3's tokenizer
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", pad_token="<|pad|>",
        padding_side="left",
    )


def build_tiny_llama(out_dir: str | Path, *, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                     seed: int = 0, vocab_size: int = 384, init_std: float = 0.2, intermediate: int | None = None,
                     max_positions: int = 4096, rope_theta: float = 500000.0, tied: bool = True) -> Path:
    """Save a random LlamaForCausalLM + tokenizer to ``out_dir`` (an HF directory AutoModel/AutoTokenizer load).

    init_std is larger than Llama's 0.02 so that logits are well separated: greedy decoding then does not hinge
    on rounding noise, and batched vs unbatched comparisons are meaningful. intermediate: the MLP width (default
    2 x hidden); tied: input and output embeddings shared.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
    vocab = tokenizer.get_vocab()
    stop = [vocab["<|end_of_text|>"], vocab["<|eot_id|>"]]
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions, rms_norm_eps=1e-5, rope_theta=rope_theta, tie_word_embeddings=tied,
        initializer_range=init_std,
        bos_token_id=vocab["<|begin_of_text|>"], eos_token_id=stop, pad_token_id=vocab["<|pad|>"],
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=stop,
                                               pad_token_id=config.pad_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
