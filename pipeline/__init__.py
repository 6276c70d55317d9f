"""The stages and what they share.

pipeline/<stage>.py  one command each (`python -m pipeline.<stage>`), run by one Snakefile rule; warm.py
                     starts the per-video torch stages from a process that imported torch once
pipeline/compute/    shared by the torch stages: the device, the model.pt format, D2-Net's localization,
                     the learning curve's points, a training step's time
pipeline/core/       shared by every stage and by the workflow, and torch-free: settings, file formats
                     and their readers, atomic writes, node-local folders, progress, metrics
pipeline/workflow/   what the Snakefile imports at parse time (torch-free): the config, the videos, the
                     settings each rule passes
Arrows point down: stages -> compute -> core; workflow -> core; models/ imports none of these
(tests/test_layers.py).
"""
