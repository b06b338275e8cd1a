"""Exports Hugging Face checkpoints (Llama, Mistral, Qwen2, GPT-2) to gpumeter's model contract
(model-store/README.md). See tools/README.md."""
