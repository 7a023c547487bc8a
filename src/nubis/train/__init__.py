"""The built-in trainer (``python -m nubis.train``) and serving of the models it writes.

- ``fit``: train logreg / mlp / cnn classifiers on one process or as torchrun/job workers (DDP);
- ``quantize`` / ``export-onnx``: derived versions compared with their parent;
- :func:`nubis.train.predictor.load_predictor` and :func:`nubis.train.serving.write_model_photon`
  serve a model directory. See docs/training.md.

Importing this package imports neither torch nor onnxruntime.
"""
