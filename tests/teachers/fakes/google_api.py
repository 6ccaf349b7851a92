"""A fake Gemini API (generativelanguage.googleapis.com/v1beta), serving both image routes, written
from Google's public documentation (the URLs are in evolvedirector/teachers/google_api.py):

```
POST /v1beta/models/{model}:generateContent   Gemini image models: inlineData in candidates[0]
POST /v1beta/models/{model}:predict           Imagen: predictions[].bytesBase64Encoded
GET  /v1beta/models/{model}                   models.get: the model and its supportedGenerationMethods
```

The key is read from `x-goog-api-key`: none is a 403 PERMISSION_DENIED "unregistered callers", a
wrong one the documented 400 INVALID_ARGUMENT with an ErrorInfo reason API_KEY_INVALID. Prompts
choose the verdict, as a moderator would: "forbidden" is blocked (Gemini: promptFeedback.blockReason;
Imagen: a 400 naming the safety filter), "unsafe" has its image filtered (Gemini: finishReason
IMAGE_SAFETY; Imagen: a prediction with only raiFilteredReason), "chatty" gets text and no image
(Gemini). Images are drawn at the documented size of the ratio asked, divided by `scale`.

Books: `billed` (answers that held an image), `ratios` (aspectRatio asked, in order), `bodies`.
`fail_next(route, reply)` injects error replies; the functions below build the documented ones.
"""

from __future__ import annotations

import base64

from tests.teachers.fakes.server import Call, FakeServer, Reply, png

# (width, height) per aspect ratio: gemini-2.5-flash-image's table, and Imagen 4's 1K sizes.
GEMINI_SIZES = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184),
                "4:3": (1184, 864), "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344),
                "16:9": (1344, 768), "21:9": (1536, 672)}
IMAGEN_SIZES = {"1:1": (1024, 1024), "3:4": (896, 1280), "4:3": (1280, 896), "9:16": (768, 1408),
                "16:9": (1408, 768)}
MODELS = {"gemini-2.5-flash-image": "generateContent", "imagen-4.0-generate-001": "predict"}


def google_error(code: int, status: str, message: str, *details: dict) -> Reply:
    return Reply(code, {"error": {"code": code, "message": message, "status": status, "details": list(details)}})


def bad_key() -> Reply:
    return google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}})


def rate_limited(delay: str = "30s", quota: str = "500") -> Reply:
    """429 RESOURCE_EXHAUSTED with a QuotaFailure and the RetryInfo wait; quota "0" is a free tier
    asking for a paid-only model."""
    return google_error(
        429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details.",
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel", "quotaValue": quota}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})


def prepay_depleted() -> Reply:
    return google_error(402, "RESOURCE_EXHAUSTED", "Your prepayment credits are depleted. Please go to AI Studio "
                        "at https://ai.studio/projects to manage your project and billing.")


def no_billing() -> Reply:
    return google_error(400, "FAILED_PRECONDITION", "Gemini API free tier is not available in your country. "
                        "Please enable billing on your project in Google AI Studio.")


def unavailable() -> Reply:
    return google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


class FakeGoogleAPI(FakeServer):
    name = "google"

    def __init__(self, key: str, scale: int = 16):
        super().__init__()
        self.key, self.scale = key, scale
        self.ratios: list[str] = []
        self.bodies: list[dict] = []

    def route(self, call: Call) -> str:
        path = call.path.removeprefix("/v1beta/models/")
        if call.method == "POST" and path.endswith(":generateContent"):
            return "generate"
        if call.method == "POST" and path.endswith(":predict"):
            return "predict"
        return "get_model" if call.method == "GET" and path != call.path else "unknown"

    def handle(self, route: str, call: Call) -> Reply:
        key = call.headers.get("x-goog-api-key")
        if key is None:
            return google_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers "
                                "without established identity). Please use API Key or other form of API consumer "
                                "identity to call this API.")
        if key != self.key:
            return bad_key()
        model, _, method = call.path.removeprefix("/v1beta/models/").partition(":")
        if route == "unknown" or model not in MODELS or (method and MODELS[model] != method):
            return google_error(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, or is not "
                                f"supported for {method or 'get'}. Call ListModels to see the available models.")
        if route == "get_model":
            return Reply(200, {"name": f"models/{model}", "displayName": model, "version": "001",
                               "supportedGenerationMethods": [MODELS[model], "countTokens"]})
        body = call.json if isinstance(call.json, dict) else {}
        with self.lock:
            self.bodies.append(body)
        return self.generate(body) if route == "generate" else self.predict(body)

    def draw(self, prompt: str, ratio: str, sizes: dict) -> str | None:
        """The base64 PNG of one billed image, or None for a ratio the model does not draw."""
        if ratio not in sizes:
            return None
        width, height = sizes[ratio]
        with self.lock:
            self.ratios.append(ratio)
            self.billed += 1
        return base64.b64encode(png(prompt, width // self.scale, height // self.scale)).decode()

    def generate(self, body: dict) -> Reply:
        try:
            prompt = body["contents"][0]["parts"][0]["text"]
            ratio = body["generationConfig"]["imageConfig"]["aspectRatio"]
        except (KeyError, IndexError, TypeError):
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if "forbidden" in prompt:
            return Reply(200, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
        if "unsafe" in prompt:
            return Reply(200, {"candidates": [{"content": {"role": "model"}, "finishReason": "IMAGE_SAFETY"}]})
        if "chatty" in prompt:
            parts = [{"text": "Here is a poem about your prompt instead."}]
        elif (data := self.draw(prompt, ratio, GEMINI_SIZES)) is None:
            return google_error(400, "INVALID_ARGUMENT", f"Unsupported aspect ratio: {ratio}")
        else:
            parts = [{"text": "Here is your image."}, {"inlineData": {"mimeType": "image/png", "data": data}}]
        return Reply(200, {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
                           "modelVersion": "gemini-2.5-flash-image"})

    def predict(self, body: dict) -> Reply:
        try:
            prompt = body["instances"][0]["prompt"]
            parameters = body.get("parameters") or {}
        except (KeyError, IndexError, TypeError):
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if "forbidden" in prompt:
            return google_error(400, "INVALID_ARGUMENT", "Image generation failed with the following error: The prompt "
                                "could not be submitted. Your current safety filter threshold prohibited one or more "
                                "words in this prompt.")
        if "unsafe" in prompt:  # filtered images are left out; with includeRaiReason, the reason stands in
            reason = {"raiFilteredReason": "Unable to show generated images. Support codes: 56562880"}
            return Reply(200, {"predictions": [reason]} if parameters.get("includeRaiReason") else {})
        ratio = str(parameters.get("aspectRatio", "1:1"))
        if ratio not in IMAGEN_SIZES:
            return google_error(400, "INVALID_ARGUMENT", "Unsupported aspect ratio.")
        # sampleCount defaults to 4, and each image is billed.
        images = [self.draw(prompt, ratio, IMAGEN_SIZES) for _ in range(int(parameters.get("sampleCount", 4)))]
        return Reply(200, {"predictions": [{"mimeType": "image/png", "bytesBase64Encoded": data} for data in images]})
