"""Tally's stored documents, one module per kind: each owns its field names, both ways.

A module builds the writes of its kind (as `Write`s, pure) and reads its documents back into
values; services and the commits they compose (`tally.plans`) go through them, and nothing
else spells a stored field name (`tests/unit/test_layers.py` checks a list of them).
"""
