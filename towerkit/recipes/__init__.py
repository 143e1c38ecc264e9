"""Registry of trainable recipes behind the `towerkit` CLI.

Importing this package registers the built-in recipes (`two_tower`, `dat`, the sequential (with
`sasrec`), the multi-interest and the multi-task ranking recipes).
"""

from towerkit.recipes.base import (IndexInputs, Recipe, available_recipes, get_recipe,
                                   load_run, make_run_config, mark_run_complete,
                                   register_recipe, write_run_config)

# Importing the recipe modules registers them.
from towerkit.recipes import (dat, mt_ebr, multi_interest,  # noqa: E402,F401
                              multi_task_ranking, sasrec, sequential, two_tower)

__all__ = [
    "IndexInputs",
    "Recipe",
    "available_recipes",
    "get_recipe",
    "load_run",
    "make_run_config",
    "mark_run_complete",
    "register_recipe",
    "write_run_config",
]
