"""The one place the code location reads its environment.

``SETTINGS`` is built when Dagster loads the code location; a bad value raises ``SettingsError``
naming the variable, so the load fails with that message instead of a stack trace from inside a run.
Everything else in ``defs/`` takes its configuration from here (see ``meta_pipeline/settings.py``
for the variables and their defaults).
"""

from meta_pipeline.settings import Settings

SETTINGS = Settings.from_env()
