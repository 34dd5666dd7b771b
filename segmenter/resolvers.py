"""OmegaConf resolvers the configs use; registered when the segmenter package is imported
(the scripts import it before Hydra composes their config)."""

from __future__ import annotations

import secrets

from omegaconf import OmegaConf


def unique_id(nbytes: int = 3) -> str:
    """``${uid:}``: random hex (6 characters by default), drawn once per config (cached like
    Hydra's ``${now:}``, and copied with it into every job of a sweep). Run folders carry it:
    two runs started in the same second never share a folder."""
    return secrets.token_hex(int(nbytes))


def register() -> None:
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", unique_id, use_cache=True)
