"""The configuration layer: the typed schema of every group (schema), what conf/ offers and
where it is (presets), the command line's spelling of numeric choices (overrides) and the
project's errors (errors). Importing the package registers the schemas with Hydra's
ConfigStore, so whoever composes a config (gdrq-run, the bench, the tests) finds them."""

from gdrq_bench.config.overrides import quote_numeric_choice
from gdrq_bench.config.presets import CONFIG_DIR
from gdrq_bench.config.schema import register_configs

register_configs()

__all__ = ["CONFIG_DIR", "quote_numeric_choice"]
