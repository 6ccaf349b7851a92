"""Before anything is bought: does every part of a config answer, with the key it is given?

`evolvedirector check CONFIG` runs all of it and prints a table; `run` runs the free part as it
starts, so that a wrong key or URL fails in seconds instead of after round 0's retries.

- Each teacher: its backend's free call (`Teacher.probe`: a model list, an account, a balance;
  each backend documents which). A teacher without one (a queue API, a local pipeline) is "not
  checked"; `--buy-one` buys one image from each teacher, through a ledger of its own under
  OUT/preflight, so that what it spent stays on record.
- The director (an OpenAI-compatible server): GET /models serves director.model; `check` also
  asks one real pairwise question about a canvas (held to structured_output when it is set) and,
  in pointwise mode, one yes/no question whose first token must come with logprobs.

A part that fails is one line naming it, what went wrong and what to change. A part that answers
but has no free way to prove its key (a 404 on the free call: a compatible server without a
model list) is "not checked", never "ok".
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from evolvedirector.config import RunConfig
from evolvedirector.director import DirectorError, build_director
from evolvedirector.director.canvas import side_by_side
from evolvedirector.director.failures import SELF_EXPLAINED, DirectorCallFailed
from evolvedirector.director.templates import fill
from evolvedirector.teachers import TEACHERS, ImageRequest, Teacher, build_teacher
from evolvedirector.teachers.faults import NOT_FOUND, Fault
from evolvedirector.teachers.health import advice, host_of

OK, FAILED, NOT_CHECKED = "ok", "failed", "not checked"
SETUP = "setup"  # the step of a part that could not be made from its config (an unset key variable)
JUDGE_PROMPT = "a red circle on a white background"
NO_FREE_CALL = "no free call for this backend"


@dataclass
class Check:
    part: str  # "teacher flux", "director"
    host: str
    step: str  # what was asked: "GET /v1/credits", "models", "judge", "logprobs", "one image"
    status: str  # OK, FAILED or NOT_CHECKED
    seconds: float
    detail: str  # what it answered, or how it failed
    fix: str = ""  # for a failure: what to change

    def line(self) -> str:
        """The one line of a failed check."""
        return f"{self.part} at {self.host}: {self.step} failed ({self.detail})" + (f": {self.fix}" if self.fix else "")


async def _timed(call):
    started = time.perf_counter()
    try:
        return await call, None, time.perf_counter() - started
    except (Fault, DirectorCallFailed) as error:
        return None, error, time.perf_counter() - started


async def check_teacher(index: int, config, *, buy_one: bool = False, ledger=None) -> list[Check]:
    part, host = f"teacher {config.name}", host_of(config)
    backend = TEACHERS.get(config.backend)
    if not buy_one and host == "local" and isinstance(backend, type) and backend.probe is Teacher.probe:
        # No server, no key, nothing free to ask: nothing to build. A local pipeline would load its
        # weights onto every device only to be thrown away, and then load them again for the run.
        return [Check(part, host, "free check", NOT_CHECKED, 0.0, f"{NO_FREE_CALL}; --buy-one buys one image")]
    try:
        teacher = build_teacher(config)
    except ValueError as error:
        return [Check(part, host, SETUP, FAILED, 0.0, str(error))]
    checks = []
    answer, error, seconds = await _timed(teacher.probe())
    if error is not None and getattr(error, "kind", None) == NOT_FOUND:
        checks.append(Check(part, host, "free check", NOT_CHECKED, seconds,
                            f"its free call answered 404: {error.message[:80]}", ""))
    elif error is not None:
        checks.append(Check(part, host, "free check", FAILED, seconds, f"{error.kind}: {error.message[:120]}",
                            advice(error.kind, config, f"teachers.{index}")))
    elif answer is None:
        checks.append(Check(part, host, "free check", NOT_CHECKED, seconds, NO_FREE_CALL
                            + ("" if buy_one else "; --buy-one buys one image")))
    else:
        checks.append(Check(part, host, "free check", OK, seconds, answer))
    if buy_one and ledger is not None and all(c.status != FAILED for c in checks):
        checks.append(await _buy_one(index, config, teacher, ledger))
    return checks


async def _buy_one(index: int, config, teacher, ledger) -> Check:
    """One image through the ledger: billed once, and kept, so a run never buys it again."""
    part, host = f"teacher {config.name}", host_of(config)
    request = ImageRequest(JUDGE_PROMPT, 0, 32)
    started = time.perf_counter()
    [purchase] = await ledger.buy(teacher, [request], round=0)
    seconds = time.perf_counter() - started
    if purchase.image_hash is None:
        kind = (purchase.error or "").split(":")[0]
        return Check(part, host, "one image", FAILED, seconds, (purchase.error or "no image")[:160],
                     advice(kind, config, f"teachers.{index}"))
    return Check(part, host, "one image", OK, seconds, f"bought one image for ${teacher.cost_per_image or 0:.3f}")


async def check_director(config: RunConfig, *, ask: bool) -> list[Check]:
    """The director's server; `ask`: also one judge question (and logprobs in pointwise mode),
    which cost a call where the server bills them."""
    director_config = config.director
    if director_config.backend != "openai":
        return []  # shapes: embedded; local: its model folder is checked with the run's paths
    host = ", ".join(host_of(server) for server in director_config.servers)
    try:
        director = build_director(director_config, seed=0)
    except DirectorError as error:
        return [Check("director", host, SETUP, FAILED, 0.0, str(error))]
    checks = []
    try:
        for server in director_config.servers:  # each must serve the model
            answer, error, seconds = await _timed(director.probe_models(server))
            unlisted = error is not None and re.search(r"HTTP (404|405|501)\b", str(error))
            if unlisted:  # a compatible server without a model list: nothing proven either way
                checks.append(Check("director", host_of(server), "models", NOT_CHECKED, seconds,
                                    f"GET /models answered {unlisted.group(0)}"))
            else:
                checks.append(_director_check(host_of(server), "models", answer, error, seconds))
        if not ask or any(check.status == FAILED for check in checks):
            return checks
        white, red = np.full((64, 64, 3), 255, np.uint8), np.full((64, 64, 3), 255, np.uint8)
        red[16:48, 16:48] = (220, 30, 30)
        canvas = side_by_side(red, white, director_config.panel_size)
        text = fill(director_config.templates.compare, prompt=JUDGE_PROMPT)
        checks.append(_director_check(host, "judge", *await _timed(director.probe_judge(text, canvas))))
        if director_config.mode == "pointwise":
            image = Image.fromarray(red)
            text = fill(director_config.templates.pointwise, prompt=JUDGE_PROMPT)
            checks.append(_director_check(host, "logprobs", *await _timed(director.probe_logprobs(text, image))))
    finally:
        await director.aclose()
    return checks


def _director_check(host: str, step: str, answer, error, seconds: float) -> Check:
    if error is None:
        return Check("director", host, step, OK, seconds, answer)
    fix = "" if error.kind in SELF_EXPLAINED else \
        "check director.base_url, director.model and the key in director.api_key_env"
    return Check("director", host, step, FAILED, seconds, f"{error.kind}: {str(error)[:400]}", fix)


async def preflight(config: RunConfig, *, ask_director: bool, buy_one: bool = False, ledger=None) -> list[Check]:
    teacher_checks = [check_teacher(i, t, buy_one=buy_one, ledger=ledger) for i, t in enumerate(config.teachers)]
    results = await asyncio.gather(*teacher_checks, check_director(config, ask=ask_director))
    return [check for checks in results for check in checks]


def estimate_line(config: RunConfig) -> str:
    """What the config's budget lets the run buy: the seed round's calls, and the caps."""
    teachers = config.teachers
    per_prompt = sum(t.cost_per_image or 0.0 for t in teachers)
    seed = config.evolve.seed_prompts
    budget = config.budget
    caps = [f"{budget.max_teacher_calls} teacher calls" if budget.max_teacher_calls else None,
            f"${budget.max_dollars:g}" if budget.max_dollars else None,
            f"{budget.max_rounds} rounds" if budget.max_rounds is not None else None,
            f"{budget.max_minutes:g} minutes" if budget.max_minutes else None]
    over = ""
    if budget.max_dollars and seed * per_prompt > budget.max_dollars:
        over = f", more than budget.max_dollars: the seed round stops at ${budget.max_dollars:g}"
    elif budget.max_teacher_calls and seed * len(teachers) > budget.max_teacher_calls:
        over = f", more than budget.max_teacher_calls: the seed round stops at {budget.max_teacher_calls} calls"
    return (f"estimate: the seed round asks {seed} prompts of {len(teachers)} teacher{'s' * (len(teachers) != 1)}: "
            f"{seed * len(teachers)} calls, ${seed * per_prompt:.2f}{over}; the run stops at "
            + ", ".join(c for c in caps if c) + " (budget)")
