"""TP=2, PP=2 and TP=2 x PP=2 (gloo ranks): the same logits as transformers / TP=1, the same HF tensors out,
checkpoints that reshard both ways. Three launches in all (each process spends ~4 s importing Megatron-Core).

Per launch, for every tiny shape: load the HF weights (load_hf_into_model, each rank reading its own slices),
run the pipeline forward, export (export_hf_weights) and compare with the HF files bit for bit on every rank;
then start a model from a `convert hf-to-mcore` checkpoint (resharded on load) and save trainer-style
checkpoints at this layout for `mcore-to-hf` to export in the parent process.
"""

import glob
import json

import pytest
import torch

from octomega.config import ModelConfig, ParallelConfig, RunConfig
from octomega.convert.random_llama import tiny_shapes, write_random_llama
from octomega.testing import run_distributed

SHAPES = tiny_shapes()
SEQ = 40
pytestmark = [pytest.mark.slow, pytest.mark.dist]


def _tokens(name):
    cfg = SHAPES[name]
    return torch.randint(0, cfg.vocab_size, (2, SEQ), generator=torch.Generator().manual_seed(11))


def _hf_tensors(hf_dir):
    from safetensors.torch import load_file

    out = {}
    for f in sorted(glob.glob(f"{hf_dir}/*.safetensors")):
        out.update(load_file(f))
    return out


def _pipeline_forward(model, tokens):
    """Logits [b, s, padded vocab] on the last stage (None elsewhere); hidden states travel by gloo p2p."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    pos = torch.arange(tokens.shape[1]).expand_as(tokens)
    if not ps.is_pipeline_first_stage():
        meta = torch.empty(4, dtype=torch.int64)
        dist.recv(meta, src=ps.get_pipeline_model_parallel_prev_rank())
        hidden = torch.empty(tuple(meta[:3].tolist()), dtype=torch.float32)
        dist.recv(hidden, src=ps.get_pipeline_model_parallel_prev_rank())
        model.set_input_tensor(hidden.to(torch.bfloat16 if meta[3] else torch.float32))
    with torch.no_grad():
        out = model(tokens, pos, None, runtime_gather_output=True)
    if not ps.is_pipeline_last_stage():
        dst = ps.get_pipeline_model_parallel_next_rank()
        dist.send(torch.tensor([*out.shape, int(out.dtype == torch.bfloat16)]), dst=dst)
        dist.send(out.float().contiguous(), dst=dst)
        return None
    return out.float()


def _numpy(t):
    """Results cross processes as numpy arrays: torch tensors would travel through torch's shared-memory
    reductions, which need the sending process alive when the parent unpickles (a race at exit)."""
    return None if t is None else t.numpy()


def _worker(rank, phases, hf_dirs, out_root):
    """Each phase (tp, pp, jobs) re-initialises Megatron's parallel state in the same processes."""
    from octomega.runtime import init_distributed

    out = {}
    for tp, pp, jobs in phases:
        init_distributed(tp=tp, pp=pp, seed=1)
        out[(tp, pp)] = _run_jobs(tp, pp, jobs, hf_dirs, f"{out_root}/tp{tp}_pp{pp}")
    return out


def _run_jobs(tp, pp, jobs, hf_dirs, out_root):
    from megatron.core import parallel_state as ps

    from octomega.convert import export_hf_weights, load_hf_into_model
    from octomega.model import build_model
    from octomega.checkpoint import load_checkpoint, save_checkpoint

    parallel = ParallelConfig(tp=tp, pp=pp)
    results = {}
    for job in jobs:
        name, dtype = job["name"], getattr(torch, job["dtype"])
        hf_dir = hf_dirs[job["hf"]]
        model = build_model(ModelConfig(hf_config=hf_dir), parallel, dtype=dtype, on_gpu=False).eval()
        load_hf_into_model(hf_dir, [model])
        r = {"logits": _numpy(_pipeline_forward(model, _tokens(job["shape"])))}
        want = _hf_tensors(hf_dir)
        names, mismatched = [], []
        for n, t in export_hf_weights([model]):
            names.append(n)
            if t.dtype != want[n].dtype or not torch.equal(t, want[n]):
                mismatched.append(n)
        r["exported_names"], r["mismatched"] = names, mismatched
        if job.get("save"):  # a trainer-style checkpoint at this layout
            run = RunConfig(model=model.octomega_model_config, parallel=parallel)
            save_checkpoint(f"{out_root}/{name}", 7, model, config=run)
        if job.get("from_ckpt"):  # start from a `convert hf-to-mcore` checkpoint, resharded on load
            fresh = build_model(ModelConfig(hf_config=hf_dir), parallel, dtype=dtype, on_gpu=False).eval()
            load_checkpoint(job["from_ckpt"], fresh)
            r["ckpt_logits"] = _numpy(_pipeline_forward(fresh, _tokens(job["shape"])))
        results[name] = r
    return {"tp_rank": ps.get_tensor_model_parallel_rank(), "pp_rank": ps.get_pipeline_model_parallel_rank(),
            "results": results}


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    """Run the three layouts once; returns {layout: per-rank results}, the HF dirs and the output root."""
    from transformers import LlamaForCausalLM

    from octomega.convert.commands import hf_to_mcore

    root = tmp_path_factory.mktemp("parallel")
    hf_dirs = {name: str(write_random_llama(root / "hf" / name, cfg, dtype=torch.float32, seed=i))
               for i, (name, cfg) in enumerate(SHAPES.items())}
    hf_dirs["bf16"] = str(write_random_llama(root / "hf" / "bf16", SHAPES["gqa3_tied_scaled"], dtype=torch.bfloat16,
                                             seed=9))
    ckpts = {}
    for tp, pp in ((2, 1), (1, 2)):  # checkpoints written for a layout, loaded at it
        ckpts[(tp, pp)] = str(root / f"hf2mc_tp{tp}_pp{pp}")
        hf_to_mcore(hf_dirs["gqa2_untied_scaled"], ckpts[(tp, pp)], tp=tp, pp=pp)
    ref = {}
    for name in SHAPES:
        with torch.no_grad():
            ref[name] = LlamaForCausalLM.from_pretrained(hf_dirs[name], dtype=torch.float32)(_tokens(name)).logits
    phases = {}
    for tp, pp in ((2, 1), (1, 2), (2, 2)):
        jobs = [{"name": n, "shape": n, "hf": n, "dtype": "float32"} for n in SHAPES]
        jobs.append({"name": "bf16", "shape": "gqa3_tied_scaled", "hf": "bf16", "dtype": "bfloat16", "save": True})
        if (tp, pp) in ckpts:
            jobs[1]["from_ckpt"] = ckpts[(tp, pp)]
        if (tp, pp) == (2, 2):
            jobs[1]["save"] = jobs[2]["save"] = True  # untied + padded vocab, tied at PP > 1
        phases[(tp, pp)] = (tp, pp, jobs)
    out = {}
    two = run_distributed(_worker, world_size=2, args=([phases[(2, 1)], phases[(1, 2)]], hf_dirs, str(root)),
                          timeout=280)  # TP=2, then PP=2, in the same two processes
    four = run_distributed(_worker, world_size=4, args=([phases[(2, 2)]], hf_dirs, str(root)), timeout=280)
    for layout in ((2, 1), (1, 2)):
        out[layout] = [r[layout] for r in two]
    out[(2, 2)] = [r[(2, 2)] for r in four]
    return {"out": out, "hf": hf_dirs, "ref": ref, "root": root}


def _last_stage(ranks):
    return [r for r in ranks if r["results"]["mha_tied"]["logits"] is not None]


@pytest.mark.parametrize("layout", [(2, 1), (1, 2), (2, 2)])
def test_logits_equal_transformers_at_layout(launches, layout):
    last = _last_stage(launches["out"][layout])
    assert len(last) == layout[0]  # every TP rank of the last stage holds the gathered logits
    for r in last:
        for name, cfg in SHAPES.items():
            logits = torch.from_numpy(r["results"][name]["logits"])
            torch.testing.assert_close(logits[..., : cfg.vocab_size], launches["ref"][name], rtol=0, atol=1e-4)


@pytest.mark.parametrize("layout", [(2, 1), (1, 2), (2, 2)])
def test_export_gives_identical_hf_tensors_on_every_rank(launches, layout):
    for r in launches["out"][layout]:
        for name, res in r["results"].items():
            shape = SHAPES["gqa3_tied_scaled" if name == "bf16" else name]
            from octomega.convert.mapping import LlamaShape

            assert res["exported_names"] == [n for n, _ in LlamaShape.of(shape).hf_tensors()]
            assert res["mismatched"] == [], (layout, name)


@pytest.mark.parametrize("layout", [(2, 1), (1, 2)])
def test_hf_to_mcore_checkpoint_loads_at_layout(launches, layout):
    for r in _last_stage(launches["out"][layout]):
        got = torch.from_numpy(r["results"]["gqa2_untied_scaled"]["ckpt_logits"])
        torch.testing.assert_close(got[..., :300], launches["ref"]["gqa2_untied_scaled"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("layout,name", [((2, 2), "gqa2_untied_scaled"), ((2, 2), "gqa3_tied_scaled"),
                                         ((2, 2), "bf16"), ((2, 1), "bf16"), ((1, 2), "bf16")])
def test_checkpoint_saved_at_layout_exports_to_identical_hf(launches, layout, name, world1, tmp_path):
    """A checkpoint saved by TP x PP ranks -> `mcore-to-hf` in one process -> the original HF tensors, dtype
    included (fp32 and bf16), loadable by transformers with the same logits."""
    from transformers import LlamaForCausalLM

    from octomega.convert.commands import mcore_to_hf

    tp, pp = layout
    ckpt = launches["root"] / f"tp{tp}_pp{pp}" / name
    hf_src = launches["hf"][name]
    out = mcore_to_hf(ckpt, tmp_path / "hf", tokenizer=hf_src)
    meta = json.loads((ckpt / "iter_0000007" / "octomega.json").read_text())
    assert meta["config"]["parallel"]["tp"] == tp and meta["config"]["parallel"]["pp"] == pp
    want, got = _hf_tensors(hf_src), _hf_tensors(out)
    assert sorted(want) == sorted(got)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    shape = "gqa3_tied_scaled" if name == "bf16" else name
    tokens = _tokens(shape)
    dtype = torch.bfloat16 if name == "bf16" else torch.float32
    with torch.no_grad():
        a = LlamaForCausalLM.from_pretrained(str(out), dtype=dtype)(tokens).logits
        b = LlamaForCausalLM.from_pretrained(hf_src, dtype=dtype)(tokens).logits
    assert torch.equal(a, b)
