"""Reward functions for GRPO."""
