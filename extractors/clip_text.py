"""CLIP's text tower for the ``clip`` stream's checkpoint: class names → unit text embeddings.

The same open_clip model and the same weights as :mod:`clipae.extractors.clip` (OpenAI's release
files hold both towers; ``--random-weights`` builds the same seeded random network, so the random
image and text towers belong together). A class name is written in words (``BaseballPitch`` →
``baseball pitch``), put into every prompt template of :data:`TEMPLATES`, encoded, L2-normalised,
averaged over the templates and L2-normalised again (CLIP's prompt ensembling):

    text(c) = normalize(mean_k normalize(encode_text(template_k(c))))          (512,)
"""
from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

from ..core.weights import load_state_strict, resolve_weights, seeded_random_init
from .clip import WEIGHTS, create_clip, load_clip_state

#: prompt templates for action names (prompt ensembling)
TEMPLATES = ("a video of a person {}.", "a photo of a person {}.", "a person doing {}.", "{}")


def readable(name: str) -> str:
    """A class name as words: ``BaseballPitch`` → ``baseball pitch``, ``Long_jump`` → ``long jump``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name.replace("_", " ").replace("-", " "))
    return " ".join(words.lower().split())


class CLIPText:
    """``embed(names) -> (C, 512)`` unit rows; ``logit_scale`` is the model's (100 for OpenAI's)."""

    def __init__(self, model_name: str = "ViT-B-16", weights_path: str | None = None, random_weights: bool = False,
                 weights_dir: str | None = None, device: str | torch.device = "cpu") -> None:
        if model_name not in WEIGHTS:
            raise ValueError(f"unknown CLIP model {model_name!r}; known: {', '.join(WEIGHTS)}")
        resolved = resolve_weights(WEIGHTS[model_name], weights_path, random_weights, weights_dir)
        with seeded_random_init():
            self.model, _ = create_clip(model_name)
        if resolved.path is not None:
            load_state_strict(f"clip {model_name}", self.model, load_clip_state(resolved.path))
        self.device = torch.device(device)
        self.model.to(self.device)
        import open_clip  # loaded by create_clip above

        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.weights_id = resolved.identity
        self.model_name = model_name
        self.logit_scale = float(self.model.logit_scale.detach().exp())

    @torch.no_grad()
    def embed(self, names: list[str], templates: tuple[str, ...] = TEMPLATES) -> np.ndarray:
        """``(len(names), 512)`` float32 unit text embeddings (prompt ensemble over ``templates``)."""
        prompts = [t.format(readable(n)) for n in names for t in templates]
        emb = self.model.encode_text(self.tokenizer(prompts).to(self.device), normalize=True).float()
        rows = F.normalize(emb.view(len(names), len(templates), -1).mean(dim=1), dim=-1)
        return rows.cpu().numpy()
