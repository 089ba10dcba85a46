"""The fleet planner: what a number of accelerators can train, in how long, with which parallel layout, for how
much energy and money — pure functions over the hardware catalogue (roost/hardware.toml) and the model presets
(configs/*.toml); no torch. Validated against published training runs (published_training_runs.csv).

    roost plan --gpus 10000 --gpu h100-sxm --days 30
    roost plan --model llama3-70b --tokens 15T --gpus 10000 --json
    roost plan --validate --plot docs/

Modules, in the order a plan is made: compute (FLOPs, scaling laws, energy, cost) → goodput (failures and
checkpoints) → mfu (the per-hardware, per-size table seeded from published runs) → layouts (memory per GPU and
the layout search) → planner (PlanConfig, plan, validate) → report (tables and PNGs).
"""
