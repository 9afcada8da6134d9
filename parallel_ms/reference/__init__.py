"""Ground truth: fine-scale FE reference, homogenized reference, error metrics, caching."""
