"""The bundled S3-DiT trainer and sampler (paper section 4.1): what a manifest buys, measured.

Owns the network (``model``; released diffusers weights mapped onto it in ``diffusers_weights``),
the flow-matching objective and sampler (``flow``), caption features and latents
(``conditioning``), the manifest loader (``data``), ``--resolution`` (``resolution``), the
``--val-fraction`` hold-out (``holdout``), the run's settings (``train_config``), the training loop
(``train``) with its pre-flight step estimate (``step_estimate``), device and threads
(``runtime``) and log (``run_log``), the held-out validation loss (``validation``), sampling from a
checkpoint (``sample``), the per-concept loss report (``concept_loss``) and the talk with a
running zcurate service (``service``).

Writes ``WS/train/<run>/`` (checkpoints, ``log.csv``) and the loss reports in
``WS/feedback/<stage>/`` (schema ``CONCEPT_LOSS``); reads manifests from ``WS/manifests/<stage>/``,
a path, or the service.
"""
