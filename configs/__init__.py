"""Bundled presets: one YAML file per task, the paper's settings with their sources."""
