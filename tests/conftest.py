import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network at run time, in tests too
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
