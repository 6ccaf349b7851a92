"""The seed every teacher image is asked with.

One image per (teacher, prompt): the seed is part of the ledger's idempotency key, so a prompt
seen again (a later round, `evolvedirector eval`) is never bought again, and eval's teacher
images of the run's own prompts are the very images the loop trained on.
"""

TEACHER_SEED = 0
