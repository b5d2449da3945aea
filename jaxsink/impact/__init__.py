"""What spikes and sinks cost a deployment: fake quantization, outlier statistics, KV-cache eviction and
pruning, measured on any model jaxsink trains or imports (`jaxsink impact`, docs/impact.md)."""
