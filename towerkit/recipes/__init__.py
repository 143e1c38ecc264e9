"""Registry of trainable recipes behind the `towerkit` CLI.

Importing this package registers the built-in recipes (`two_tower`, and the sequential and
multi-interest recipes when their modules are present).
"""

import importlib
import importlib.util

from towerkit.recipes.base import (IndexInputs, Recipe, available_recipes, get_recipe,
                                   load_run, make_run_config, register_recipe,
                                   write_run_config)

# Import the recipe modules so they register. Modules written in parallel by other issues are
# imported when their file exists; an ImportError raised *inside* an existing module propagates
# (find_spec only checks that the file is there).
for _module in ("towerkit.recipes.two_tower", "towerkit.recipes.sequential",
                "towerkit.recipes.multi_interest"):
    if importlib.util.find_spec(_module) is not None:
        importlib.import_module(_module)
del _module

__all__ = [
    "IndexInputs",
    "Recipe",
    "available_recipes",
    "get_recipe",
    "load_run",
    "make_run_config",
    "register_recipe",
    "write_run_config",
]
