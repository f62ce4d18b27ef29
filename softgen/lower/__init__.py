"""Lowering: an IR program plus a Schedule and a target's capabilities -> the decisions
every backend renders (plan.py: per-pass forms; schedule.py: the loop shape)."""
from .schedule import Schedule

__all__ = ["Schedule"]
