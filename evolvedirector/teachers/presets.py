"""Providers that speak a protocol the project already has: a named set of settings, not a backend.

A teacher entry with `backend: recraft` (say) is the `openai` backend with Recraft's host, key
variable, model and sizes filled in; any field the entry gives wins. The run's saved config holds
the expanded entry (`backend: openai` and every setting), so what ran is on disk in full.

| preset        | backend  | provider                                                             |
|---------------|----------|----------------------------------------------------------------------|
| `gpt-image-1` | `openai` | OpenAI's images API (b64 only)                                       |
| `recraft`     | `openai` | Recraft (OpenAI-style images, URL or b64; account at GET /users/me)  |
| `together`    | `openai` | Together (OpenAI-style images with width/height, seed, url or base64)|
| `fal`         | `queue`  | fal's queue (submit, poll the status, fetch the result)              |

Read from each provider's documentation on 2026-12-07 (check before a run: hosts and sizes change):
platform.openai.com/docs/api-reference/images; recraft.ai/docs/api-reference (endpoints, appendix of
sizes, pricing); docs.together.ai/reference/post-images-generations; docs.fal.ai (model APIs:
queue), whose status and result paths name the app without the model's subpath (fal-ai/flux, not
fal-ai/flux/dev).
"""

from __future__ import annotations

from typing import Callable

GPT_IMAGE_1 = {
    "backend": "openai", "model": "gpt-image-1", "base_url": "https://api.openai.com/v1",
    "api_key_env": "OPENAI_API_KEY", "default_size": "1024x1024",
    "aspect_sizes": ["1024x1024", "1536x1024", "1024x1536"],
}

RECRAFT = {
    "backend": "openai", "model": "recraftv3", "base_url": "https://external.api.recraft.ai/v1",
    "api_key_env": "RECRAFT_API_TOKEN", "default_size": "1024x1024", "response_format": "b64_json",
    # Recraft V3's sizes (its appendix); the image URLs it gives otherwise last about a day.
    "aspect_sizes": ["1024x1024", "1365x1024", "1024x1365", "1536x1024", "1024x1536", "1820x1024", "1024x1820",
                     "1024x2048", "2048x1024", "1434x1024", "1024x1434", "1024x1280", "1280x1024", "1024x1707",
                     "1707x1024"],
    "probe_path": "/users/me",  # the account and its credits: free
}

TOGETHER = {
    "backend": "openai", "model": "black-forest-labs/FLUX.1-schnell", "base_url": "https://api.together.xyz/v1",
    "api_key_env": "TOGETHER_API_KEY", "default_size": "1024x1024", "size_fields": "width_height",
    "seed_field": "seed", "response_format": "base64",
}


def fal(entry: dict) -> dict:
    """fal's queue for the entry's `model` (an endpoint id such as fal-ai/flux/dev)."""
    model = str(entry.get("model", "fal-ai/flux/dev")).strip("/")
    app = "/".join(model.split("/")[:2])  # status and result live under the app, not the subpath
    return {
        "backend": "queue", "base_url": "https://queue.fal.run", "api_key_env": "FAL_KEY",
        "auth_header": "Authorization", "auth_prefix": "Key ", "submit_path": f"/{model}",
        "status_path": f"/{app}/requests/{{request_id}}/status", "result_path": f"/{app}/requests/{{request_id}}",
        "request_id_field": "request_id", "done_statuses": ["COMPLETED"], "image_field": "images.0.url",
        "prompt_field": "prompt", "seed_field": "seed", "size_field": "image_size",
        "default_size": {"width": 1024, "height": 1024}, "aspect_size_format": "object",
        # fal's safety checker answers a black image and says so here: a billed refusal.
        "refusal_field": "has_nsfw_concepts.0",
    }


PRESETS: dict[str, Callable[[dict], dict]] = {
    "gpt-image-1": lambda entry: GPT_IMAGE_1,
    "recraft": lambda entry: RECRAFT,
    "together": lambda entry: TOGETHER,
    "fal": fal,
}


def expand_preset(entry):
    """A teacher entry with a preset's name as its backend, as the backend it stands for: the
    preset's settings, then the entry's own fields over them. Anything else is returned as it is."""
    if not isinstance(entry, dict) or entry.get("backend") not in PRESETS:
        return entry
    settings = PRESETS[entry["backend"]](entry)
    fields = {name: value for name, value in entry.items() if name != "backend"}
    if settings["backend"] == "queue":
        fields.pop("model", None)  # the queue has no model field: the preset put it in the paths
    return {**settings, **fields}
