"""The RL stage (`octomega rl`): GRPO and PPO on Megatron-Core with rollouts through octomega.generate.

    config.py        typed config, OctoThinker's defaults, the batch sizes of a step, validation, --dry-run report
    algos.py         pure tensor functions: GRPO advantages, GAE, clipped policy/value losses, KL, loss aggregation
    batch.py         a step's samples as tensors; mini-batch / DP / micro-batch slicing
    actor.py         ModelRunner (actor, reference, critic): forward-only passes, one update per mini-batch; actor loss
    critic.py        PPO's critic (the actor's body + a fresh scalar head) and its value loss
    rollout.py       prompt pool, sampling through a Generator, grading, the step's batch and rollout metrics
    rewards.py       reward registry: boxed (ours, the default), octothinker (the authors' exact cascade), boxed_01
    templates.py     prompt templates (orz, qa, raw)
    engines.py       rollout engines per backend (megatron: shared weights; hf, vllm: a weight stream)
    weight_stream.py the weight stream to engines holding their own copy (hf, vllm), in buckets
    validate.py      greedy zero-shot validation during training
    export.py        the HF export at the end of a run
    setup.py         model shape, tokenizer, actor / reference / critic, initial weights, resume
    loop.py          the flat RL loop
    cli.py           `octomega rl RECIPE [key=value ...] [--dry-run]`
See docs/rl.md.
"""
