"""The quantization engine shared by every flow: annotated graph → plan → observers →
q/dq. PT2E quantizers and the FX QConfigMapping flow both produce annotations for it."""

__all__: list[str] = []
