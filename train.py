"""Train a dexwm world model from webdataset shards (Lightning CLI, YAML configs).

Usage:
  python train.py fit --config configs/train/tiny.yaml                  # defaults + tiny preset
  python train.py fit --config configs/train/tiny.yaml --data.train+=... # more sources
  python train.py fit --config configs/train/tiny.yaml --ckpt_path last # resume a killed run
  python train.py fit --config configs/train/paper.yaml                 # DexWM scale (GPUs)
  python train.py fit --print_config                                    # every option

The resolved config is written beside the checkpoints (config.yaml) and into each checkpoint.
"""

from dexwm.training.cli import WorldModelCLI


def main() -> None:
    WorldModelCLI()


if __name__ == "__main__":
    main()
