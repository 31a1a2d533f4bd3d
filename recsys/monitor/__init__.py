"""Monitoring: data, feature, prediction and model drift against a reference."""
