"""The model server: a lean ASGI app over a micro-batching predictor.

``adapter`` loads a verified model and predicts; ``batching`` gathers concurrent
requests into one predict call and one audit-log transaction; ``app`` speaks
HTTP (MLflow's ``/invocations``, Open Inference Protocol V2, health, metrics);
``process`` starts and stops servers; ``client`` is ``Deployment``, the handle of a running server.
"""
