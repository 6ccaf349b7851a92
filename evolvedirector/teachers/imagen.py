"""Imagen (imagen-4.0-generate-001, -fast-, -ultra-) through the Gemini API's :predict.

```
POST base_url/models/{model}:predict      x-goog-api-key: KEY
     {"instances": [{"prompt": PROMPT}],
      "parameters": {"sampleCount": 1, "aspectRatio": "16:9", "includeRaiReason": true, ...parameters}}
  -> 200 {"predictions": [{"mimeType": "image/png", "bytesBase64Encoded": BASE64}]}
```

The aspect ratio is one of 1:1, 3:4, 4:3, 9:16, 16:9 (`aspect_ratios`); the image is fitted to
the request. Imagen on the Gemini API takes no seed (the SDKs refuse one), so the request's seed
only tells apart the images bought for one prompt. `parameters` adds imageSize (1K, 2K),
personGeneration, and the like.

Verdicts (`google_api.py` has the error statuses, billing and the preflight): an image the safety
filters removed is left out of `predictions` (with includeRaiReason, a prediction carries its
`raiFilteredReason` instead); with one image asked, that is an answer without an image: refused,
free (Imagen is priced per image returned), final. A prompt the filters reject outright is a 400
INVALID_ARGUMENT naming the safety filter ("... prohibited one or more words in this prompt"):
refused too.

Limits: Tier 1 allows Imagen 4 Standard and Fast 10 requests a minute and 70 a day (Ultra: 5 and
30), the `rate_limit_rpm` default. Google marks the Imagen models deprecated in favour of the
Gemini image models; a model that has been shut down answers 404, which the preflight reports.

Documentation read 2026-12-07:
- https://ai.google.dev/gemini-api/docs/imagen (REST request, parameters, aspect ratios, models)
- https://ai.google.dev/gemini-api/docs/rate-limits (Tier 1 limits of Imagen 4)
- https://ai.google.dev/gemini-api/docs/pricing (Imagen 4: a price per image)
- https://firebase.google.com/docs/reference/js/ai.imagengenerationresponse (filtered images are
  left out; filteredReason)
"""

from __future__ import annotations

from evolvedirector.teachers.base import ImageRequest
from evolvedirector.teachers.faults import REFUSED, Fault
from evolvedirector.teachers.google_api import GoogleTeacher


class ImagenTeacher(GoogleTeacher):
    method = "predict"

    def __init__(self, config):
        super().__init__(config)
        self.parameters = dict(config.parameters)

    def body(self, request: ImageRequest) -> dict:
        parameters = {"includeRaiReason": True, **self.parameters, "sampleCount": 1, "aspectRatio": self.ratio(request)}
        return {"instances": [{"prompt": request.prompt}], "parameters": parameters}

    def image_data(self, answer: dict) -> str:
        predictions = [p for p in answer.get("predictions") or [] if isinstance(p, dict)]
        for prediction in predictions:
            if isinstance(prediction.get("bytesBase64Encoded"), str):
                return prediction["bytesBase64Encoded"]
        reason = next((str(p["raiFilteredReason"]) for p in predictions if p.get("raiFilteredReason")), None)
        raise Fault(REFUSED, f"the image was filtered out: {' '.join((reason or 'no predictions').split())[:200]}")
