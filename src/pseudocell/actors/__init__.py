"""Thin Ray actor classes around the stage functions (the only package with Ray, besides
``orchestrator``). The classes are plain Python; the executor wraps them with
``ray.remote`` so they stay importable and testable without a Ray cluster."""
