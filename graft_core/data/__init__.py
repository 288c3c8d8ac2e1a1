"""Datasets, the fixed subsets used by the two grafting stages, and the way back from model space to pixels.

``digits`` (tiny/micro), ``imagenet`` (ImageNet → SD-VAE latents, sharded and resumable), ``sources`` (one
interface over both for every preset) and ``decoder`` (latents → [-1, 1] images → uint8).
"""
from graft_core.data.digits import DigitsSplits, load_digits, stratified_subset

__all__ = ["DigitsSplits", "load_digits", "stratified_subset"]
