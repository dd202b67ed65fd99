"""The demo (`streams demo`) and the sample events it, the tests and the benches publish.

Outside the core: no module of streams/ outside this package imports it (tests/test_layers.py holds that).
"""
