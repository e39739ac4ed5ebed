"""Importing any strategy module first builds the registry: a majority or best-of-N rollout may itself be any
strategy, and those parameter models are only complete once the union of every strategy exists."""

from strategies import registry as registry
