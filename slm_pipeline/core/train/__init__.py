"""S5 fine-tuning: typed configuration, the training process, DeepSpeed configs, MLflow logging."""
