"""Pure spike and sink statistics (float32 JAX, checked against float64 NumPy references in tests)."""
