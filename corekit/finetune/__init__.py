"""Fine-tuning: classification, instruction tuning, preference tuning (DPO), with adapters."""
