"""Shared by the stages that run torch: the device a job runs on, the model.pt format, D2-Net's
localization, the learning curve's points and a training step's time."""
