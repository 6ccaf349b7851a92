"""The seed every teacher image is asked with.

One image per (teacher, prompt): the seed is part of the ledger's idempotency key, so a prompt
seen again (a later round, `evolvedirector eval`) is never bought again, and eval's teacher
images of the run's own prompts are the very images the loop trained on. The one exception is
a redraw (`evolve.redraw`): another image of a prompt already in the set, asked with the seed
`TEACHER_SEED + n`, where n is how many samples of that prompt the store holds, so each redraw
is a new purchase and a resumed round asks for the very same ones.
"""

TEACHER_SEED = 0
