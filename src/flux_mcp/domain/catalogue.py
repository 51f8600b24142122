"""The Flux model catalogue: each model, what it is good at and costs, and the limits of one task."""

from __future__ import annotations

from dataclasses import dataclass

# --- The model catalogue -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What one Flux model is for and what it accepts."""

    guide: str
    can_edit: bool
    pixel_sizes: bool  # False: only aspect ratios are accepted


MODELS: dict[str, ModelInfo] = {
    "flux-dev": ModelInfo("fast and inexpensive, good for drafts and iteration", True, True),
    "flux-pro": ModelInfo("higher fidelity and prompt adherence than flux-dev", True, True),
    "flux-2-flex": ModelInfo("FLUX.2 tuned for typography and fine control", True, False),
    "flux-2-pro": ModelInfo("FLUX.2 production quality, balanced speed", True, False),
    "flux-2-max": ModelInfo("FLUX.2 best quality, slowest and most expensive", True, False),
    "flux-2-klein": ModelInfo("FLUX.2 small and fast; generation only", False, False),
    "flux-kontext-pro": ModelInfo("context-aware; the default choice for editing an image", True, False),
    "flux-kontext-max": ModelInfo("strongest kontext model: edits with fine detail and text", True, False),
}

MAX_COUNT = 4  # images one task may make
MAX_BATCH = 50  # task ids one upstream read (and one get_tasks) may name


def model_guide() -> str:
    """One line per model, for tool descriptions and error messages."""
    lines = []
    for name, info in MODELS.items():
        sizes = "pixel sizes or ratios" if info.pixel_sizes else "aspect ratios only"
        edits = "" if info.can_edit else "; cannot edit"
        lines.append(f"- {name}: {info.guide} ({sizes}{edits})")
    return "\n".join(lines)
