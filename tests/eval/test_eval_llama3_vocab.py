"""`octomega eval` (hf backend) on a tiny model with Llama 3's real vocabulary and Meta's tokenizer, on shipped GSM8K
items: the run completes, records are written, and generation stops at the Llama-3 stop ids.

The model is the random tiny Llama-3-vocabulary model with its weights set so that greedy decoding is forced: after
any token outside the chain it emits the chain's first token, after the chain's i-th token the (i+1)-th, and after
the last one the chosen final token. Residual channels 0..k carry only the embedding (the layers' output rows there
are zeroed): channel 0 is 1 for every token, channel i marks chain token i; the lm_head reads them. The random
layers still run on the other channels. With a final token that is not a stop id the chain repeats until
--max-new-tokens, so the stop assertions can fail."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from octomega.eval.benchmarks import get_benchmark
from octomega.eval.cli import main
from octomega.eval.data import load_items
from octomega.eval.prompts import prompt_for

MARK, LOGIT = 100.0, 100.0
MAX_NEW = 16


def forced_model(src, out, chain: list[int], final: int):
    """Save `src` (a tiny HF Llama) with weights that make greedy decoding emit chain..., final (see module doc)."""
    from transformers import LlamaForCausalLM

    from data_prep.llama3_tokenizer import FILES

    model = LlamaForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    k = len(chain)
    emb, head = model.model.embed_tokens.weight, model.lm_head.weight
    assert head.data_ptr() != emb.data_ptr() and emb.shape[1] > k + 8  # untied, room for the channels
    with torch.no_grad():
        emb[:, 0] = 1.0
        emb[:, 1:k + 1] = 0.0
        for i, t in enumerate(chain, start=1):
            emb[t, i] = MARK
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[:k + 1] = 0.0
            layer.mlp.down_proj.weight[:k + 1] = 0.0
        model.model.norm.weight[:k + 1] = 1.0
        head[:, :k + 1] = 0.0
        head[chain[0], 0] = LOGIT
        for i, t in enumerate(chain[1:] + [final], start=1):
            head[t, i] = LOGIT
    model.save_pretrained(str(out))
    for f in (*FILES, "generation_config.json"):
        shutil.copy2(src / f, out / f)
    return out


@pytest.fixture(scope="module")
def gsm8k_items(testsets_dir):
    return load_items(get_benchmark("gsm8k"), str(testsets_dir), limit=3)


@pytest.mark.parametrize("final,stops", [("<|eot_id|>", True), ("<|end_of_text|>", True),
                                         ("<|reserved_special_token_5|>", False)])
def test_eval_stops_at_llama3_stop_ids(tiny_llama3_dir, testsets_dir, gsm8k_items, tmp_path, final, stops):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama3_dir))
    gold = gsm8k_items[0].gold
    text = f" The answer is {gold}."
    chain = tok(text, add_special_tokens=False)["input_ids"]
    final_id = tok.convert_tokens_to_ids(final)
    assert len(set(chain)) == len(chain) and final_id not in chain and final_id >= 128_000
    prompts = [prompt_for(get_benchmark("gsm8k").prompt, "base-fewshot").render(it.question) for it in gsm8k_items]
    assert all(tok(p)["input_ids"][-1] not in chain for p in prompts)  # the chain starts from channel 0
    model_dir = forced_model(tiny_llama3_dir, tmp_path / "model", chain, final_id)

    out = tmp_path / "run"
    rc = main([str(model_dir), "--benchmarks", "gsm8k", "--limit", "3", "--data-dir", str(testsets_dir),
               "--max-new-tokens", str(MAX_NEW), "--out", str(out), "--no-progress", "--batch-size", "3"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["benchmarks"]["gsm8k"]["n"] == 3 and res["generation"]["max_new_tokens"] == MAX_NEW
    recs = [json.loads(x) for x in (out / "gsm8k" / "samples.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and [r["id"] for r in recs] == [it.id for it in gsm8k_items]
    k = len(chain)
    if stops:  # the chain, then the stop token (kept in the count, not in the text), then nothing
        for r in recs:
            assert (r["completion"], r["finish_reason"], r["num_tokens"]) == (text, "stop", k + 1), r["completion"]
        assert recs[0]["verdicts"] == {"harness": True, "math_verify": True}  # graded from the decoded text
        assert res["benchmarks"]["gsm8k"]["accuracy"] == pytest.approx(
            sum(it.gold == gold for it in gsm8k_items) / 3)
    else:  # not a stop id: the chain starts over until --max-new-tokens
        ids = ((chain + [final_id]) * MAX_NEW)[:MAX_NEW]
        want = tok.decode(ids, skip_special_tokens=True)
        assert want.startswith(text + text)
        for r in recs:
            assert (r["completion"], r["finish_reason"], r["num_tokens"]) == (want, "length", MAX_NEW)
