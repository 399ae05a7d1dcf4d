"""Evaluate a world model open loop on held-out shards (DexWM protocol), with baselines and pictures.

Usage:
  python eval.py --checkpoint runs/train/tiny/checkpoints/last.ckpt \
      --data '[{paths: [runs/demo/feats/allegro_heldout]}]'          # defaults: DexWM protocol
  python eval.py --config configs/eval/tiny.yaml --checkpoint ... --data ...   # fast CPU preset
  python eval.py --config configs/eval/tiny.yaml --config configs/eval/ablation_hand_loss.yaml ...
  python eval.py --print_config                                        # every option

Per horizon step (default 20 x 0.2 s) and per dataset / embodiment: feature MAE (DexWM's "L2"), MSE
and cosine in the model's normalised feature space (raw-space numbers in the JSON), and PCK of a
keypoint probe (trained on true features of the held-in shards, cached) on predicted features;
beside them copy-last-frame, shuffled-actions and zeroed-actions baselines and any `--compare`
checkpoints, as ratios to the model. Writes <out_dir>/results.json (every number + the config),
results.md, error_vs_horizon.png, pck_vs_horizon.png, strips/*.png, videos/*.mp4 (context |
truth | prediction, through a small pixel decoder) and config.yaml. From Python:
dexwm.evaluation.run_eval(...).
"""

from dexwm.config import parse
from dexwm.evaluation import EvalConfig, run_eval


def main(argv: list[str] | None = None) -> dict:
    res = run_eval(parse(EvalConfig, argv))
    print(f"wrote {res['files']['markdown']} ({res['seconds']} s)")
    for group, checks in res["checks"].items():
        print(group, checks)
    return res


if __name__ == "__main__":
    main()
