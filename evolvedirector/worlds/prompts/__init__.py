"""The open world: the user's own prompts, from a .txt, .tsv, .csv or .jsonl file.

files (reading the file), proposals (checking a director's prompt) and world (the `World` the
loop is given) are its parts.
"""

from evolvedirector.worlds.prompts.files import PromptFileError, read_prompt_file
from evolvedirector.worlds.prompts.world import PromptsWorld

__all__ = ["PromptFileError", "PromptsWorld", "read_prompt_file"]
