"""Datasets and the fixed subsets used by the two grafting stages."""
from graft_core.data.digits import DigitsSplits, load_digits, stratified_subset

__all__ = ["DigitsSplits", "load_digits", "stratified_subset"]
