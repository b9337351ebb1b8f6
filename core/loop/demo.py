"""``labelloop demo``: a ready-to-label project built from the bundled SMS spam sample.

The sample's pool rows are imported without their labels (they are what the annotator
labels) and its test rows with theirs, as the held-out reference, in one import whose
``source_file`` is the sample itself. Pool messages that repeat a test message word
for word are dropped (``--dedupe``), so nothing leaks into the test split. The first
batch is keyword-seeded with a word-boundary pattern; the loop corrects the class
prior that keyword seeding skews (core/loop/al_round.py ``prior_correction``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from labelloop.core.config import CONFIG_NAME
from labelloop.core.store.imports import import_file
from labelloop.core.store.project import Project, init_project
from labelloop.core.util.safeio import atomic_write_text

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "sms_spam.csv"
SEED_QUERY = r"\b(free|prize|win|winner|claim|txt|call now|urgent)\b"

GUIDELINES = """# Annotation guidelines: SMS spam demo

Labels: **ham** (1), **spam** (2). One label per message.

## spam
Unsolicited messages sent in bulk to sell, lure or defraud, whoever the sender is.
- Prize and lottery claims: "You have WON a £1000 prize! Call 09061..." is spam.
- Premium-rate numbers and short codes to call or text ("txt WIN to 8007"), paid
  subscriptions, ringtone and chat-line offers.
- Marketing from companies you may have dealt with, when it asks you to reply, call
  or click ("Your mobile is due for an upgrade, call free").
- Phishing: "your account is locked", "claim your refund", with a link or number.

## ham
Messages written by a person to this person, whatever they are about.
- Chat, plans, jokes, news between friends, family and colleagues: "I'll be there at 7".
- Personal messages that mention money, winning or free things are still ham:
  "I won the match!" or "dinner is free tonight, come over".
- Service messages the person asked for (a delivery time, a bank code they requested)
  are ham.

## Hard cases
- Forwarded chain letters ("send this to 10 friends"): spam.
- A friend advertising their own small business to you personally: ham, unless it is
  clearly sent to many people (a template, a short code, "reply STOP").
- Too short to tell ("ok", "call me"): ham; it is a person's message.
- When the model's suggestion is wrong, press the right label; press x first only if
  you want to say why (the reason helps the team fix these guidelines).

## When to skip or flag
- **Skip** (s): the text is garbled or not in a language you read.
- **Flag** (f): you think the guideline above gets this case wrong; write why.
"""


def sample_path() -> Path:
    if not SAMPLE.exists():
        from labelloop.core.util.errors import ProjectError

        raise ProjectError(
            f"the bundled sample {SAMPLE} is missing; run labelloop from a full checkout of the repository."
        )
    return SAMPLE


def build_demo(project_dir: Path | str, *, sample: Path | None = None) -> tuple[Path, bool]:
    """Create the demo project unless it exists. Returns (dir, created)."""
    project_dir = Path(project_dir)
    if (project_dir / CONFIG_NAME).exists():
        return project_dir, False
    sample = sample or sample_path()
    existed = project_dir.exists()
    init_project(project_dir, ["ham", "spam"], name="sms-spam-demo")
    try:
        cfg = project_dir / CONFIG_NAME
        text = cfg.read_text(encoding="utf-8")
        # Keyword seeding suits spam: the first batch mixes matches of this pattern with random items.
        text = text.replace('cold_start = "random"', 'cold_start = "keyword"')
        text = text.replace('seed_query = ""', "seed_query = '" + SEED_QUERY + "'")
        text = text.replace("seed_size = 50", "seed_size = 40")
        atomic_write_text(cfg, text)
        atomic_write_text(project_dir / "guidelines.md", GUIDELINES)
        with Project.open(project_dir) as project:
            import_file(
                project,
                sample,
                id_col="id",
                label_col="label",
                split_col="split",
                prelabel_pool=False,
                dedupe=True,
                source_name=str(sample),
                actor=f"import:{sample.name}",
            )
            # Fill the queue now (the keyword-seeded cold-start batch), so the workstation opens on an item.
            from labelloop.core.loop.al_round import train_and_queue

            train_and_queue(project, seed=0)
    except BaseException:
        if not existed:  # never delete a folder the user had before
            shutil.rmtree(project_dir, ignore_errors=True)
        raise
    return project_dir, True
