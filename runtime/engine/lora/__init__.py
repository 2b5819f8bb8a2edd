"""Multi-LoRA serving: PEFT adapters loaded at run time and mixed in one batch (S-LoRA/Punica style).

- `adapter.py`: reading and validating a PEFT adapter directory (torch-free) and building its weights;
- `registry.py`: the adapters loaded on the host, by name, each with a load version;
- `slots.py`: which adapter sits in which of the `max_loras_per_batch` device slots (LRU, pure);
- `weights.py`: the slot-stacked A/B tensors of every wrapped projection;
- `ops.py`: the batched shrink/expand op over token segments (torch reference; an SGMV kernel fits);
- `layers.py`: the wrapper that adds the LoRA delta to a base projection;
- `manager.py`: ties them together for the engine and the model runner.
"""
