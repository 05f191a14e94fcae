"""Recipes to and from the tools our users come from: A1111 infotext and ComfyUI workflows.

Importers turn a foreign description into recipe data (the plain dict a recipe TOML holds) plus the list of
settings that have no sdbake equivalent, which the written recipe carries as comments, so nothing is dropped
silently. Exporters go the other way and report the stages the target cannot express.
"""
