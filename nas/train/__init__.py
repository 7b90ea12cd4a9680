"""Training plumbing: fine-tuning (QAT, distillation), data, augmentation, checkpoints, devices."""
