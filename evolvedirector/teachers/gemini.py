"""Gemini image models ("Nano Banana": gemini-2.5-flash-image, gemini-3-pro-image-preview, ...)
through the Gemini API's generateContent.

```
POST base_url/models/{model}:generateContent      x-goog-api-key: KEY
     {"contents": [{"parts": [{"text": PROMPT}]}],
      "generationConfig": {"responseModalities": ["IMAGE"], "seed": SEED,
                           "imageConfig": {"aspectRatio": "16:9"}, ...generation_config}}
  -> 200 {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": BASE64}}]},
                          "finishReason": "STOP"}],
          "promptFeedback": {...}, "usageMetadata": {...}}
```

The aspect ratio is one of `aspect_ratios` (gemini-2.5-flash-image draws 1:1 at 1024x1024, 16:9 at
1344x768, ... 21:9 at 1536x672); the image is fitted to the request. The seed goes in
generationConfig.seed (an int32). Models that think (Gemini 3 Pro Image) may send interim
"thought" images before the final one: the last image part that is not a thought is the answer.

Verdicts inside a 200 (`google_api.py` has the error statuses, billing and the preflight):
- `promptFeedback.blockReason` (SAFETY, PROHIBITED_CONTENT, IMAGE_SAFETY, OTHER, ...): the
  prompt was blocked before anything was made: refused, free.
- a candidate without an image: finishReason IMAGE_SAFETY, SAFETY, PROHIBITED_CONTENT, ... (the
  output was filtered), or STOP with text only (the model declined, or chatted instead of
  drawing; the docs say the model may answer text only): refused, never trained on, and not
  billed at the image price (only its text tokens are); NO_IMAGE, MAX_TOKENS and the like are a
  final bad_response, not billed at the image price either.

Limits: per project and tier (AI Studio shows a project's own); Tier 1 allows gemini-2.5-flash-image
500 requests a minute and 2,000 a day, the `rate_limit_rpm` default.

Documentation read 2026-12-07:
- https://ai.google.dev/gemini-api/docs/image-generation (request, aspect ratios and sizes, text-only answers)
- https://ai.google.dev/api/generate-content (GenerationConfig, ImageConfig, Candidate.finishReason,
  PromptFeedback.blockReason, Part.inlineData)
- https://ai.google.dev/gemini-api/docs/rate-limits (Tier 1 limits of Gemini 2.5 Flash Image)
- https://ai.google.dev/gemini-api/docs/pricing (image output tokens: 1290 per 1024x1024 image)
"""

from __future__ import annotations

from evolvedirector.teachers.base import ImageRequest
from evolvedirector.teachers.faults import BAD_RESPONSE, REFUSED, Fault
from evolvedirector.teachers.google_api import GoogleTeacher

# finishReasons by which the output was filtered for its content (the rest: NO_IMAGE, MAX_TOKENS, ...).
FILTERED = {"SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST", "SPII",
            "RECITATION", "IMAGE_RECITATION"}


class GeminiTeacher(GoogleTeacher):
    method = "generateContent"

    def __init__(self, config):
        super().__init__(config)
        self.generation_config = dict(config.generation_config)

    def body(self, request: ImageRequest) -> dict:
        config = {"responseModalities": ["IMAGE"], **self.generation_config, "seed": request.seed % 2**31}
        image_config = self.generation_config.get("imageConfig") or {}
        config["imageConfig"] = {**image_config, "aspectRatio": self.ratio(request)}
        return {"contents": [{"parts": [{"text": request.prompt}]}], "generationConfig": config}

    def image_data(self, answer: dict) -> str:
        blocked = (answer.get("promptFeedback") or {}).get("blockReason")
        if blocked:
            raise Fault(REFUSED, f"the prompt was blocked: blockReason {blocked}")
        candidates = answer.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(candidate, dict):
            raise Fault(BAD_RESPONSE, "no candidates in the answer")
        parts = [p for p in (candidate.get("content") or {}).get("parts") or [] if isinstance(p, dict)]
        images = [p["inlineData"] for p in parts if not p.get("thought") and isinstance(p.get("inlineData"), dict)
                  and str(p["inlineData"].get("mimeType", "")).startswith("image/")]
        if images and isinstance(images[-1].get("data"), str):
            return images[-1]["data"]
        finish = candidate.get("finishReason")
        text = " ".join(" ".join(str(p.get("text", "")) for p in parts).split())[:200]
        if finish in FILTERED:
            raise Fault(REFUSED, f"the image was filtered: finishReason {finish}")
        if finish == "STOP" and text:
            raise Fault(REFUSED, f"the model answered text, no image: {text!r}")
        raise Fault(BAD_RESPONSE, f"no image in the answer (finishReason {finish})")
