"""
The command-line layer: one module per tool (`tools/<name>.py` is a thin shell over
`retina_plugin.cli.<name>`), the parser and one-line errors they share (`arguments`).
"""
