"""Shared test setup: the Keras backend must be TensorFlow for the TFLite converter."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
