"""capguard's engine: everything that computes, decides, acts, stores and serves.

It never imports textual or capguard_tui (tests/test_layering.py proves it).
"""

__version__ = "0.1.0"
