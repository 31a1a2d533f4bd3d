"""Chains of stages run in order: the demo's whole journey and the Last.fm benchmark's pipeline.

The one layer that may import every stage; no stage imports it.
"""
