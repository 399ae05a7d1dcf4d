"""Offline evaluation of world models (DexWM protocol): open-loop rollouts on held-out shards,
feature error and keypoint PCK per horizon step, baselines, plots and rollout pictures.

    from dexwm.evaluation import run_eval
    results = run_eval("configs/eval/tiny.yaml",  # or an EvalConfig, or nothing
                       checkpoint="runs/train/tiny/checkpoints/last.ckpt",
                       data=[{"paths": ["runs/demo/feats/allegro_heldout"]}], out_dir="runs/eval")
    results["groups"]["all"]["methods"]["model"]["feat_mae"]  # per horizon step
"""

from dexwm.evaluation.config import EvalConfig, eval_config
from dexwm.evaluation.runner import run_eval

__all__ = ["EvalConfig", "eval_config", "run_eval"]
