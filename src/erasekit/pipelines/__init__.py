"""Loading and saving pipelines, the class-conditional CFG pipeline, tiny builders and bundled models."""

from .loading import BUNDLED_MODELS, bundled_path, load_pipeline
from .pipeline_class_conditional import ClassConditionalPipeline

__all__ = ["BUNDLED_MODELS", "ClassConditionalPipeline", "bundled_path", "load_pipeline"]
