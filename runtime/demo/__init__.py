"""The built-in demo model: a seeded random Hugging Face checkpoint with a real BPE tokenizer.

No model hub is reachable where fleetserve is built and tested; every runtime test and benchmark uses this
model instead. See `write_demo_model` and `default_demo_model_dir`.
"""

from fleetserve.runtime.demo.cache import default_demo_model_dir
from fleetserve.runtime.demo.checkpoint import DEMO_MODEL_VERSION, write_demo_model
from fleetserve.runtime.demo.spec import ARCHS, SIZES

__all__ = ["ARCHS", "DEMO_MODEL_VERSION", "SIZES", "default_demo_model_dir", "write_demo_model"]
