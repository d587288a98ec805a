"""The 3-stage H-LDM trainer: `python -m hldm train --stage vae|ldm|finetune|all --config train/<preset>.toml`.

Modules: config (TOML presets), state (atomic resumable checkpoints), ema, logging
(CSV + TensorBoard), distributed (torchrun/DDP), weighting (curriculum and rare-class
schedules), data (the training/validation windows), trainer (the loop), cli.
"""
