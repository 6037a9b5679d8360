"""The offline demo, fenced off from the core: synthetic camera paths, two manipulations, the
demo data set built from the real faces shipped in ``dfdetect/demo/sample/``, and the demo run.

Nothing in the core imports this package.
"""
