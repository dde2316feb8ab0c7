"""Recipes: YAML files naming the variants to train and measure (schema, loading, sweeps, overrides)."""

from .loader import Located, apply_sets, load_located, parse_set
from .resolve import ResolvedRecipe, ResolvedVariant, load_recipe
from .schema import ComponentRef, DatasetRef, EvaluateSpec, GenerationEval, Recipe, Variant

__all__ = ["ComponentRef", "DatasetRef", "EvaluateSpec", "GenerationEval", "Located", "Recipe",
           "ResolvedRecipe", "ResolvedVariant", "Variant", "apply_sets", "load_located", "load_recipe",
           "parse_set"]
