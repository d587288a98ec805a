"""H-LDM Studio: clinically controllable heart-sound synthesis (hierarchical latent diffusion)."""
import os

# No network at run time: nothing in the product downloads weights or phones home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
