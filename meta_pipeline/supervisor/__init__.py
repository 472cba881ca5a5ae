"""Supervisor rules and statistics, without Dagster."""
