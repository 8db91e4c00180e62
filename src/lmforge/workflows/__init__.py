"""Workflows: the multi-step jobs a user asks for, as plain functions over models, corpora and config objects.

The CLI calls one of these per command; they are the only layer that combines feature packages (compress with
evaluate, train with scaling, …), so the feature packages never import each other.
"""
