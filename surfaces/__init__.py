"""The surfaces people and systems use: the service facade, the CLI, the dry run and the demo.

Everything here goes through :mod:`surfaces.service` or the flows; nothing below imports it.
"""
