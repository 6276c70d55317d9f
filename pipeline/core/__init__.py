"""Shared by the stages and the workflow, and torch-free (no torch, cv2, av or decord, even inside a
function: tests/test_layers.py), so the Snakefile and the light stages can import any of it."""
