"""Audit: bias (CrowS-Pairs, BBQ, counterfactual probes), privacy (canaries, membership, PII), robustness, misuse."""

from lmforge.audit.bbq import BbqResult, bbq, compare_bbq
from lmforge.audit.bias import (CROWS_SUBSETS, CrowsPairsResult, compare_counterfactual, compare_crows_pairs,
                                counterfactual_probes, crows_pairs)
from lmforge.audit.misuse import load_misuse_probes, misuse_probes
from lmforge.audit.privacy import canary_exposure, member_split, membership_scores, membership_signals, pii_in_generations
from lmforge.audit.robustness import PERTURBATIONS, compare_robustness, perturb_document, worst_case
from lmforge.audit.stats import Interval, auc, bootstrap_mean, bootstrap_statistic, paired_bootstrap_delta, tpr_at_fpr

__all__ = [
    "CROWS_SUBSETS",
    "PERTURBATIONS",
    "BbqResult",
    "CrowsPairsResult",
    "Interval",
    "auc",
    "bbq",
    "bootstrap_mean",
    "bootstrap_statistic",
    "canary_exposure",
    "compare_bbq",
    "compare_counterfactual",
    "compare_crows_pairs",
    "compare_robustness",
    "counterfactual_probes",
    "crows_pairs",
    "load_misuse_probes",
    "member_split",
    "membership_scores",
    "membership_signals",
    "misuse_probes",
    "paired_bootstrap_delta",
    "perturb_document",
    "pii_in_generations",
    "tpr_at_fpr",
    "worst_case",
]
