"""The shapes world: a small text-to-image world whose every image can be checked exactly.

grammar (the 1272 prompts), render (correct and mistaken images), rules (the exact checker),
profiles (the teachers), judge (the synthetic director's comparisons) and heldout (the
benchmark) follow the contract in WORLD.md.

Import the submodules by name (`from evolvedirector.worlds.shapes import grammar`); the package
re-exports nothing, so `world.render` is always the module and never its function.
"""
