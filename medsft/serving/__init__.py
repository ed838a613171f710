"""Serving: the OpenAI-compatible server, its request pipeline, the batched generation engine, the body limit and
the Prometheus metrics, and the web page."""
