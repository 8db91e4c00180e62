"""Explain: token attributions (gradient × input, integrated gradients), logit lens, attention maps, HTML view."""

from lmforge.explain.attention import AttentionMaps, attention_maps
from lmforge.explain.attributions import METHODS, Attribution, attribute, gradient_x_input, integrated_gradients
from lmforge.explain.logit_lens import LogitLens, logit_lens
from lmforge.explain.view import explain, render_html

__all__ = [
    "METHODS",
    "AttentionMaps",
    "Attribution",
    "LogitLens",
    "attention_maps",
    "attribute",
    "explain",
    "gradient_x_input",
    "integrated_gradients",
    "logit_lens",
    "render_html",
]
