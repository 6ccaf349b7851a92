"""A fake of Replicate's predictions API (and of replicate.delivery), from its HTTP API reference.

```
POST /v1/models/{owner}/{name}/predictions  {input}            an official model
POST /v1/predictions                        {version, input}   a model version
     Authorization: Bearer TOKEN, Prefer: wait[=N]              -> 201, the prediction object
GET  /v1/predictions/{id}                                       -> the prediction object
GET  /v1/account                                                -> {type, username, name, github_url}
GET  {delivery}/{id}/out-0.{format}                             the output file (a second server)
```

A prediction runs for `run_polls` GETs (`starting`, then `processing`) and then succeeds; with
`Prefer: wait` and `run_polls == 0` the create answers it finished. Its output is a list of one
URL (flux-schnell's schema), or one URL when `single_output`. A prompt holding `moderated_word`
fails with the safety checker's error, one holding `failing_word` with an out-of-memory error;
neither is billed. Errors are problem-details bodies `{title, detail, status}`: 401 a missing or
wrong token, 402 insufficient credit, 404 an unknown model or prediction, 422 invalid input or
version, 429 `throttled()`.

Books: `billed` images, `credit` left, the aspect ratios asked, the `Prefer` headers seen, each
prediction by id.
"""

from __future__ import annotations

import uuid

from tests.teachers.fakes.server import Call, FakeServer, Reply, png

OFFICIAL_MODELS = {"black-forest-labs/flux-schnell": 0.003}  # dollars per output image
ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
UNIT = 8  # the fake's image is the ratio times this, in pixels: 1:1 is 8x8, 16:9 is 128x72
NSFW = "All generated images contained NSFW content. Try running it again with a different prompt."


def problem(status: int, title: str, detail: str, **more) -> Reply:
    return Reply(status, {"title": title, "detail": detail, "status": status, **more},
                 headers={"content-type": "application/problem+json"})


def throttled(seconds: int = 30, retry_after: float | None = None) -> Reply:
    """The documented 429 body; a Retry-After header only when asked for."""
    reply = Reply(429, {"detail": f"Request was throttled. Your rate limit resets in ~{seconds}s."})
    if retry_after is not None:
        reply.headers["Retry-After"] = f"{retry_after:g}"
    return reply


class FakeDelivery(FakeServer):
    """replicate.delivery: output files by path, no auth (the URLs are unguessable)."""

    name = "replicate-delivery"

    def __init__(self):
        super().__init__()
        self.files: dict[str, bytes] = {}

    def route(self, call: Call) -> str:
        return "file"

    def handle(self, route: str, call: Call) -> Reply:
        data = self.files.get(call.path)
        return Reply(404, content=b"Not Found") if data is None else Reply(200, content=data,
                                                                           headers={"content-type": "image/png"})


class FakeReplicateAPI(FakeServer):
    name = "replicate"

    def __init__(self, key: str = "r8_test_token", credit: float = 10.0, run_polls: int = 0,
                 moderated_word: str = "forbidden", failing_word: str = "enormous", single_output: bool = False,
                 versions: tuple[str, ...] = ("5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",)):
        super().__init__()
        self.key, self.credit, self.run_polls = key, credit, run_polls
        self.moderated_word, self.failing_word, self.single_output = moderated_word, failing_word, single_output
        self.versions = {version: 0.0005 for version in versions}  # a time-billed model: dollars per run
        self.delivery = FakeDelivery()
        self.predictions: dict[str, dict] = {}
        self.polls_left: dict[str, int] = {}
        self.aspect_ratios: list[str] = []  # asked by each create that made a prediction
        self.prefer: list[str | None] = []  # each create's Prefer header

    def start(self):
        self.delivery.start()
        return super().start()

    def stop(self) -> None:
        super().stop()
        self.delivery.stop()

    def route(self, call: Call) -> str:
        parts = call.path.strip("/").split("/")
        official = len(parts) == 5 and parts[:2] == ["v1", "models"] and parts[4] == "predictions"
        if call.method == "POST" and (call.path == "/v1/predictions" or official):
            return "create"
        if call.method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "predictions"]:
            return "get"
        if call.method == "GET" and call.path == "/v1/account":
            return "account"
        return "unknown"

    def handle(self, route: str, call: Call) -> Reply:
        token = call.headers.get("authorization")
        if token is None:
            return problem(401, "Unauthenticated", "You did not pass an authentication token")
        if token != f"Bearer {self.key}":
            return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        if route == "account":
            return Reply(200, {"type": "user", "username": "evolve", "name": "Evolve Director",
                               "github_url": "https://github.com/evolve"})
        if route == "create":
            return self.create(call)
        if route == "get":
            return self.get(call.path.rsplit("/", 1)[-1])
        return problem(404, "Not found", f"{call.method} {call.path} is not a route")

    def create(self, call: Call) -> Reply:
        body = call.json if isinstance(call.json, dict) else {}
        if call.path == "/v1/predictions":
            model, price = "replicate/hello-world", self.versions.get(body.get("version"))
            if price is None:
                return problem(422, "Invalid version or not permitted",
                               "The specified version does not exist (or perhaps you don't have permission to use it?)")
        else:
            model = "/".join(call.path.split("/")[3:5])
            if (price := OFFICIAL_MODELS.get(model)) is None:
                return problem(404, "Not found", f"Model {model} not found")
        model_input = body.get("input") if isinstance(body.get("input"), dict) else {}
        prompt, ratio = model_input.get("prompt"), model_input.get("aspect_ratio", "1:1")
        if not isinstance(prompt, str) or not prompt:
            return problem(422, "Input validation failed", "- input: prompt is required",
                           invalid_fields=[{"type": "required", "field": "input.prompt"}])
        if ratio not in ASPECT_RATIOS:
            return problem(422, "Input validation failed",
                           f"- input.aspect_ratio: aspect_ratio must be one of: {', '.join(ASPECT_RATIOS)}",
                           invalid_fields=[{"type": "enum", "field": "input.aspect_ratio"}])
        if not isinstance(model_input.get("seed", 0), int):
            return problem(422, "Input validation failed", "- input.seed: Invalid type. Expected: integer")
        with self.lock:
            if self.credit < price:
                return problem(402, "Insufficient credit", "You have insufficient credit to run this model. Go to "
                               "https://replicate.com/account/billing#billing to purchase credit.")
            prediction_id = uuid.uuid4().hex[:26]
            self.prefer.append(call.headers.get("prefer"))
            self.aspect_ratios.append(ratio)
            self.predictions[prediction_id] = {
                "id": prediction_id, "model": model, "version": body.get("version", "hidden"), "input": model_input,
                "status": "starting", "output": None, "error": None, "logs": "", "data_removed": False,
                "urls": {"get": f"{self.url}/v1/predictions/{prediction_id}",
                         "cancel": f"{self.url}/v1/predictions/{prediction_id}/cancel"},
                "_price": price}
            self.polls_left[prediction_id] = self.run_polls
            if call.headers.get("prefer", "").startswith("wait") and self.run_polls == 0:
                self._finish(prediction_id)  # sync mode: answered finished
            return Reply(201, self._public(prediction_id), headers={"Location": f"/v1/predictions/{prediction_id}"})

    def get(self, prediction_id: str) -> Reply:
        with self.lock:
            if prediction_id not in self.predictions:
                return problem(404, "Not found", "The requested resource could not be found.")
            if self.predictions[prediction_id]["status"] in ("starting", "processing"):
                if self.polls_left[prediction_id] > 0:
                    self.polls_left[prediction_id] -= 1
                    self.predictions[prediction_id]["status"] = "processing"
                else:
                    self._finish(prediction_id)
            return Reply(200, self._public(prediction_id))

    def _finish(self, prediction_id: str) -> None:
        """Run the model (under the lock): fail, or succeed, bill and upload its output."""
        prediction = self.predictions[prediction_id]
        model_input = prediction["input"]
        prompt = model_input["prompt"]
        if self.moderated_word in prompt or self.failing_word in prompt:
            error = NSFW if self.moderated_word in prompt else "CUDA out of memory (E1001)"
            prediction.update(status="failed", error=error)  # no output image: nothing billed
            return
        width, height = (int(side) * UNIT for side in model_input.get("aspect_ratio", "1:1").split(":"))
        path = f"/{prediction_id}/out-0.{model_input.get('output_format', 'webp')}"
        # Always PNG bytes, whatever the name says: the client decodes any format.
        self.delivery.files[path] = png(prompt, width, height, model_input.get("seed") or 42)
        url = self.delivery.url + path
        prediction.update(status="succeeded", output=url if self.single_output else [url])
        self.credit -= prediction["_price"]
        self.billed += 1

    def _public(self, prediction_id: str) -> dict:
        return {k: v for k, v in self.predictions[prediction_id].items() if not k.startswith("_")}
