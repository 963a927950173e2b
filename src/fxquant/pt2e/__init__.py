"""PT2E flow (mirrors torchao.quantization.pt2e); root exports are added as modules land."""
