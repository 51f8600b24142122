"""The MCP prompts: ready-made instructions a user picks in the host (Gemini CLI: as slash commands).

- `flux_prompt`: turn a rough idea into a strong Flux prompt, pick the model and size, then generate.
- `choose_model`: which model and size suit a purpose, without generating anything.
- `edit_instruction`: word an edit the way the kontext models follow it, then edit.

Each returns the text of one user message. The model and size facts come from the catalogue in
`catalogue.py` and the size rules in `arguments.py`, so a model added there shows up here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, ValidationError, validate_call

from flux_mcp.domain.arguments import (
    ASPECT_RATIOS,
    NAMED_PIXEL_SIZES,
    PIXEL_MAX,
    PIXEL_MIN,
    PIXEL_STEP,
    EditImageArgs,
    GenerateImageArgs,
    default_size,
)
from flux_mcp.domain.catalogue import MAX_COUNT, MODELS, model_guide

MAX_ARGUMENT_CHARS = 2000

Idea = Annotated[
    str,
    Field(
        min_length=1, max_length=MAX_ARGUMENT_CHARS, description="The image you have in mind, in any words."
    ),
]
Use = Annotated[
    str | None,
    Field(
        max_length=MAX_ARGUMENT_CHARS,
        description="Where the image will be used (slide, phone wallpaper, print, avatar…), if it matters.",
    ),
]
Purpose = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ARGUMENT_CHARS,
        description="What the image is for: e.g. 'quick drafts of a logo', 'a print poster with a title'.",
    ),
]
Change = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ARGUMENT_CHARS, description="What should change in the image."),
]
ImageRef = Annotated[
    str | None,
    Field(
        max_length=4096,
        description="The image: a public http(s) URL, or flux://images/{task_id}/{index} from a result.",
    ),
]

RATIO_BY_USE = (
    "16:9 for slides, banners and desktop wallpapers, 9:16 for phone screens and stories, 1:1 for avatars, "
    "icons and feeds, 3:2 or 4:3 for photographs, 2:3 or 3:4 for posters and book covers, 21:9 for cinematic "
    "panoramas"
)


def flux_prompt(idea: Idea, use: Use = None) -> str:
    """Turn an idea into a strong Flux prompt (subject, style, lighting, composition, camera), pick the
    model and size that fit, then generate it."""
    where = use or "not given: assume a general-purpose image"
    return f"""Turn this idea into a strong prompt for a Flux image model, then generate it.

Idea: {idea}
Where the image will be used: {where}

Write the prompt as one to three plain sentences of natural language (Flux follows descriptions, \
not keyword lists or weights), covering in this order:
1. Subject: who or what, doing what, with the details that matter (materials, colours, expression, \
how many).
2. Setting: where and when.
3. Style or medium: photograph, watercolour, oil painting, 3D render, flat vector illustration…
4. Lighting: soft morning light, golden hour, overcast, neon rim light, studio softbox…
5. Composition: framing and viewpoint (close-up, wide shot, from above), where the subject sits, what \
fills the background.
6. Camera, for a photographic look: lens and depth of field (35 mm, 85 mm f/1.8 with a blurred \
background, macro).
Say what should be there rather than what should not: Flux has no negative prompt, and naming a thing \
("no cars") tends to draw it. Put any words the image must show in double quotes, exactly as they \
should appear. Stay under about 100 words.

{_models_and_sizes()}
Match the aspect ratio to the use: {RATIO_BY_USE}.

Show the prompt, the model and the size, with one line on why. Then call generate_image once with \
them: every call is billed, so do not call it again to retry a result that is only pending (use \
get_task with its task_id)."""


def choose_model(purpose: Purpose) -> str:
    """Recommend the Flux model and size for a purpose, with the reason, without generating anything."""
    defaults = ", ".join(f"{name} {default_size(name)}" for name in MODELS)
    return f"""Recommend a Flux model and an image size for this purpose: {purpose}

Do not generate anything yet.

{_models_and_sizes()}
Without a size, each model gets its default: {defaults}.
Match the aspect ratio to the use: {RATIO_BY_USE}.
Weigh speed and cost against quality, whether the image must show legible text, and whether an \
existing image is being edited (only models that can edit will do). For several variations, \
generate_image takes count up to {MAX_COUNT} in one call.

Answer with the model, the size and one sentence on why; name the runner-up if the choice is close. \
Then offer to call generate_image with them."""


def edit_instruction(change: Change, image_url: ImageRef = None) -> str:
    """Word an edit the way Flux's editing models follow it (what changes, what stays), then make it."""
    image = image_url or (
        "the image from the earlier result: its flux://images/{task_id}/{index} URI, or a public URL"
    )
    editors = "\n".join(f"- {name}: {info.guide}" for name, info in MODELS.items() if info.can_edit)
    default = EditImageArgs.model_fields["model"].default
    return f"""Edit an image with Flux: {change}

Image: {image}

Flux edits follow an instruction, not a description of the whole new picture. Write one that:
- names precisely what changes ("change the car's colour to deep red", "make it night, with the \
street lamps lit");
- names what must stay as it is ("keep the person's face, pose and clothes and the background \
unchanged");
- for a new style, names the style and what to preserve ("as a watercolour painting, keeping the \
composition");
- for text, quotes it exactly ("replace the sign's text with 'OPEN'").
One change per call works best; for several, edit the result again.

Models that can edit:
{editors}
{default} is the default.

Show the instruction, then call edit_image once with prompt, image_url and (if not the default) \
model. A local file cannot be edited: the Flux API fetches the image itself, so it needs a public \
URL or a flux://images URI from this server."""


PROMPTS: dict[str, Callable[..., str]] = {
    fn.__name__: fn for fn in (flux_prompt, choose_model, edit_instruction)
}
TITLES = {
    "flux_prompt": "Write a strong Flux prompt",
    "choose_model": "Choose the model and size",
    "edit_instruction": "Word an image edit",
}


def argument_problem(name: str, arguments: dict[str, Any] | None) -> str | None:
    """What is wrong with asking for prompt `name` with these arguments, in words; None if nothing."""
    prompt = PROMPTS.get(name)
    if prompt is None:
        return f"there is no prompt {name!r}; the prompts are {', '.join(PROMPTS)}"
    try:
        validate_call(prompt)(**(arguments or {}))
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}"
            for error in exc.errors()
        )
    return None


def _models_and_sizes() -> str:
    pixel_models = [name for name, info in MODELS.items() if info.pixel_sizes]
    generate_default = GenerateImageArgs.model_fields["model"].default
    return f"""The models (this server's catalogue; also the flux://models resource):
{model_guide()}
{generate_default} is the default for generate_image.

Sizes: {" and ".join(pixel_models)} take a pixel size ({", ".join(NAMED_PIXEL_SIZES)}, or WIDTHxHEIGHT \
with sides from {PIXEL_MIN} to {PIXEL_MAX} in multiples of {PIXEL_STEP}) or an aspect ratio; every \
other model takes only an aspect ratio: {", ".join(ASPECT_RATIOS)}."""
