"""Offline evaluation of world models (DexWM protocol): open-loop rollouts on held-out shards,
feature error and keypoint PCK per horizon step, baselines, plots and rollout pictures.

    from dexwm.evaluation import EvalConfig, run_eval
    results = run_eval(checkpoint="runs/train/tiny/checkpoints/last.ckpt",
                       data=[{"paths": ["runs/demo/feats/allegro_heldout"]}], max_clips=64)
"""

from dexwm.evaluation.runner import EvalConfig, run_eval

__all__ = ["EvalConfig", "run_eval"]
