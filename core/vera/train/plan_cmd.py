"""`vera-train plan`: registered from vera.cli.plan_cmd, which `vera-render plan` shares (one planner)."""

from vera.cli.plan_cmd import register_training as register

__all__ = ["register"]
